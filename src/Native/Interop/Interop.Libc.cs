// Raw libc declarations that Mono.Posix does not bind (memfd_create, fallocate, the seal fcntl, madvise).
// Constants are Linux x86-64/arm64 values from the kernel headers, not the runtime's translation values.
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static partial class Interop
{
    internal static partial class Libc
    {
        private const string Lib = "libc.so.6";

        public const uint MFD_CLOEXEC = 0x0001;
        public const uint MFD_ALLOW_SEALING = 0x0002;

        public const int F_ADD_SEALS = 1033;
        public const int F_SEAL_SEAL = 0x0001;
        public const int F_SEAL_SHRINK = 0x0002;
        public const int F_SEAL_GROW = 0x0004;

        public const int FALLOC_FL_KEEP_SIZE = 0x01;
        public const int FALLOC_FL_PUNCH_HOLE = 0x02;

        [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int MemfdCreate(string name, uint flags);

        [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
        public static partial int Fallocate(int fd, int mode, long offset, long length);

        [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
        public static partial int Fcntl(int fd, int cmd, int arg);
    }
}
