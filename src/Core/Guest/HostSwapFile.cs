// The host swap file of one VM: where the fault handler writes a page it evicts when it has no frame to
// give (ESX's last resort after ballooning). Deleted at once (Linux) or on close (Windows), so it never
// outlives the process, even one that is killed.
using Microsoft.Win32.SafeHandles;

namespace PageLab.Core.Guest;

internal static class HostSwapFile
{
    public static SafeFileHandle Open(string vmName)
    {
        string safe = string.Concat(vmName.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-'));
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-hostswap-{safe}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        if (OperatingSystem.IsWindows())
            return File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        SafeFileHandle file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        File.Delete(path); // the open handle keeps the file; no name is left behind
        return file;
    }
}
