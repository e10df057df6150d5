// The mapping budget and the SIGSEGV handler are process-wide, so all tests share one collection
// and run one at a time.
[assembly: CollectionBehavior(CollectionBehavior.CollectionPerAssembly)]
