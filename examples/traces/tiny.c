/* A program with no C library: writes 16 pages of a static array (512 bytes apart), reads them back and
   exits by system call. Its lackey trace is every reference it makes: small enough to keep in the repository. */
static char buf[16 * 4096];

void _start(void)
{
    for (int i = 0; i < (int)sizeof buf; i += 512) buf[i] = (char)i;
    int s = 0;
    for (int i = 0; i < (int)sizeof buf; i += 512) s += buf[i];
    __asm__ volatile("mov $60, %%eax\n syscall" :: "D"(s & 1) : "rax", "rcx", "r11", "memory");
    __builtin_unreachable();
}
