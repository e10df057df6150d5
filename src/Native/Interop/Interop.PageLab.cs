// Declarations of libpagelab (libpagelab.so / libpagelab.dll), the C fault engine in c/ (its protocol
// is at the top of c/pagelab.h).
// Every call runs in preemptive mode, so the GC never stops one half way while it holds a lock. Buffers
// passed in are managed arrays or stack memory, never guest memory: the engine writes some of them while
// it holds a region lock, and a fault there would wait on that same lock.
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static unsafe partial class Interop
{
    internal static partial class PageLab
    {
        // "libpagelab": the runtime probes libpagelab.so on Linux and libpagelab.dll on Windows, where a
        // plain "pagelab.dll" would collide with the `pagelab` command's own assembly.
        private const string Lib = "libpagelab";

        public const int EINVAL = -100000;
        public const int EMAPLIMIT = -100001;
        public const int ENOREGION = -100002;
        public const int EFULL = -100003;
        public const int ESTATE = -100004;
        public const int ELOST = -100005;
        public const int ENOFRAME = -100006;
        public const int EBUSY = -100007;
        public const int ENOSHARE = -100008;
        public const int EAGAIN = -100009;
        public const int ENOARENA = -100016; // the arena is destroyed (C# never calls after its SafeHandle is released)
        public const uint NoFrame = 0xFFFFFFFF;
        public const uint MapBack = 1;
        public const uint ShareDying = 0x80000000;

        /// <summary>A VM's fault counters (struct pl_counters), field by field in the C struct's order: the engine
        /// copies them by name and a layout test (NativeLayoutTests) compares names and offsets with
        /// pl_counters_layout, so a counter added on one side only fails it.</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct RegionCounters
        {
            public ulong DemandFaults;
            public ulong SampleTouches;
            public ulong PoolEmpty;
            public ulong MapFailures;
            public ulong TrackedWrites;
            public ulong HandlerRecoveries;
            public ulong HostSwapOuts;
            public ulong HostSwapIns;
            public ulong Contained;
            public ulong Overcommits;
            public ulong Spurious;
            public ulong EventsDropped;
            public ulong CowBreaks;
            public ulong PagesMerged;
            public ulong FaultedAround;
            public ulong TakenFromOthers;

            /// <summary>How many counters the struct holds (each one 64-bit word).</summary>
            public static int Count => sizeof(RegionCounters) / sizeof(ulong);
        }

        /// <summary>What the handler did that managed code must finish (struct pl_event).</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct Event
        {
            public ulong Page;
            public uint Frame;
            public uint Kind;
        }

        public const uint EventRecovered = 1, EventContained = 2, EventSharedLost = 3, EventMapLimit = 4;
        public const int PageFlagLost = 4;

        [LibraryImport(Lib, EntryPoint = "pl_install")] public static partial int Install();
        [LibraryImport(Lib, EntryPoint = "pl_installed")] public static partial int Installed();
        [LibraryImport(Lib, EntryPoint = "pl_previous_flags")] public static partial long PreviousFlags();
        [LibraryImport(Lib, EntryPoint = "pl_set_map_budget")] public static partial void SetMapBudget(long budget);
        [LibraryImport(Lib, EntryPoint = "pl_map_budget")] public static partial long MapBudget();
        [LibraryImport(Lib, EntryPoint = "pl_maps_in_use")] public static partial long MapsInUse();
        [LibraryImport(Lib, EntryPoint = "pl_chained_faults")] public static partial ulong ChainedFaults();

        // ---- the arena: every frame's state and owner ----
        [LibraryImport(Lib, EntryPoint = "pl_arena_create")]
        public static partial int ArenaCreate(nint os, nint view, ulong frames, out nint arena);
        [LibraryImport(Lib, EntryPoint = "pl_arena_destroy")] public static partial int ArenaDestroy(nint arena);
        [LibraryImport(Lib, EntryPoint = "pl_arena_tables")]
        public static partial int ArenaTables(nint arena, out byte* state, out int* owner);
        [LibraryImport(Lib, EntryPoint = "pl_arena_counts")] public static partial int ArenaCounts(nint arena, long* counts);
        [LibraryImport(Lib, EntryPoint = "pl_arena_owned")] public static partial long ArenaOwned(nint arena, int owner);
        [LibraryImport(Lib, EntryPoint = "pl_region_owned")] public static partial long RegionOwned(int region);
        [LibraryImport(Lib, EntryPoint = "pl_frames_alloc")] public static partial int FramesAlloc(nint arena, uint count, uint* frames);
        [LibraryImport(Lib, EntryPoint = "pl_frames_release")] public static partial int FramesRelease(nint arena, uint* frames, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_frames_release_or_zero")] public static partial int FramesReleaseOrZero(nint arena, uint* frames, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_frames_retire")] public static partial int FramesRetire(nint arena, uint frame);
        [LibraryImport(Lib, EntryPoint = "pl_frames_retire_free")] public static partial int FramesRetireFree(nint arena, uint frame);
        [LibraryImport(Lib, EntryPoint = "pl_frames_move")]
        public static partial int FramesMove(nint arena, uint* frames, uint n, uint from, uint to);

        // ---- regions ----
        [LibraryImport(Lib, EntryPoint = "pl_region_create")]
        public static partial int RegionCreate(nint arena, int owner, ulong pages, uint poolCapacity, out int id, out nint @base);
        [LibraryImport(Lib, EntryPoint = "pl_region_destroy")] public static partial int RegionDestroy(int id);
        [LibraryImport(Lib, EntryPoint = "pl_region_tables")]
        public static partial int RegionTables(int id, out uint* state, out uint* p2m);
        [LibraryImport(Lib, EntryPoint = "pl_region_maps")] public static partial long RegionMaps(int id);
        [LibraryImport(Lib, EntryPoint = "pl_region_counters")]
        public static partial int RegionCountersGet(int id, ulong* counters, int n);
        [LibraryImport(Lib, EntryPoint = "pl_counters_layout")]
        public static partial int CountersLayout(byte** names, uint* offsets, int cap, out uint size);
        [LibraryImport(Lib, EntryPoint = "pl_set_frame_limit")] public static partial int SetFrameLimit(int id, ulong limit);
        [LibraryImport(Lib, EntryPoint = "pl_set_fault_around")] public static partial int SetFaultAround(int id, uint pages);
        [LibraryImport(Lib, EntryPoint = "pl_set_host_swap")] public static partial int SetHostSwap(int id, nint file);
        [LibraryImport(Lib, EntryPoint = "pl_host_swap_out")] public static partial int HostSwapOut(int id, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_events_take")] public static partial int EventsTake(int id, Event* events, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_page_flags")] public static partial int PageFlags(int id, ulong page);

        [LibraryImport(Lib, EntryPoint = "pl_map")]
        public static partial int Map(int id, ulong first, ulong count, uint* frames, uint* oldFrames, uint flags);
        [LibraryImport(Lib, EntryPoint = "pl_unmap")]
        public static partial int Unmap(int id, ulong first, ulong count, uint* oldFrames);
        [LibraryImport(Lib, EntryPoint = "pl_pool_push")] public static partial int PoolPush(int id, uint* frames, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_pool_take")] public static partial int PoolTake(int id, uint* frames, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_pool_count")] public static partial int PoolCount(int id);
        [LibraryImport(Lib, EntryPoint = "pl_sample")] public static partial int Sample(int id, ulong* pages, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_sample_collect")]
        public static partial int SampleCollect(int id, ulong* pages, uint n, byte* touched);

        // ---- protection ----
        [LibraryImport(Lib, EntryPoint = "pl_page_hash")] public static partial ulong PageHash(byte* page, ulong bytes);
        [LibraryImport(Lib, EntryPoint = "pl_set_disk_fd")] public static partial int SetDiskFd(int id, nint disk);
        [LibraryImport(Lib, EntryPoint = "pl_group_create")]
        public static partial int GroupCreate(int id, ulong* pages, uint k, uint parityFrame);
        [LibraryImport(Lib, EntryPoint = "pl_group_free")] public static partial int GroupFree(int id, uint group, out uint parity);
        [LibraryImport(Lib, EntryPoint = "pl_protect")]
        public static partial int Protect(int id, ulong* pages, uint n, long* diskOffsets);
        [LibraryImport(Lib, EntryPoint = "pl_inject")]
        public static partial int Inject(int id, ulong page, uint offset, byte* mask, uint len, int requireTracked, out uint hit);
        [LibraryImport(Lib, EntryPoint = "pl_recover")]
        public static partial int Recover(int id, ulong page, uint bad, uint fresh, out uint old);
        [LibraryImport(Lib, EntryPoint = "pl_parity_rebuild")]
        public static partial int ParityRebuild(int id, uint group, uint fresh, out uint old);
        [LibraryImport(Lib, EntryPoint = "pl_scrub")]
        public static partial int Scrub(int id, ulong first, ulong count, ulong* bad, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_scrub_parity")] public static partial int ScrubParity(int id, uint* bad, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_group_of")] public static partial int GroupOf(int id, ulong page);

        // ---- page sharing (share.c) ----
        [LibraryImport(Lib, EntryPoint = "pl_set_sharing")] public static partial int SetSharing(int id, int on);
        [LibraryImport(Lib, EntryPoint = "pl_share_create")] public static partial int ShareCreate(int id, ulong page, out uint frame);
        [LibraryImport(Lib, EntryPoint = "pl_share_page")] public static partial int SharePage(int id, ulong page, uint frame);
        [LibraryImport(Lib, EntryPoint = "pl_unshare")] public static partial int Unshare(int id, ulong first, ulong count);
        [LibraryImport(Lib, EntryPoint = "pl_share_report")] public static partial int ShareReport(nint arena, uint frame, out int wasZero);
        [LibraryImport(Lib, EntryPoint = "pl_share_tables")] public static partial int ShareTables(nint arena, out uint* sharers);
        [LibraryImport(Lib, EntryPoint = "pl_share_counts")] public static partial int ShareCounts(nint arena, long* counts);
        [LibraryImport(Lib, EntryPoint = "pl_region_shared")] public static partial long RegionShared(int id);
    }
}
