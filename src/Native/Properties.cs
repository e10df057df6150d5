using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("PageLab.Core")]
[assembly: InternalsVisibleTo("PageLab.Tests")]
[assembly: InternalsVisibleTo("PageLab.Bench")]
