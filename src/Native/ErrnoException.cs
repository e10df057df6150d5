// The one exception type for a failed OS call: keeps the operation, the raw errno (Win32 error code on
// Windows) and its text.
using System.Runtime.InteropServices;

namespace PageLab.Native;

public sealed class ErrnoException : IOException
{
    public ErrnoException(string operation, int errno)
        : base($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} ({(OperatingSystem.IsWindows() ? "Win32 error" : "errno")} {errno})")
    {
        Operation = operation;
        Errno = errno;
    }

    public string Operation { get; }
    public int Errno { get; }

    /// <summary>Throws for the last P/Invoke error (call right after a failing call with SetLastError).</summary>
    public static ErrnoException FromLastError(string operation) => new(operation, Marshal.GetLastPInvokeError());
}
