// Package archtest holds the layering of the module to what
// docs/ARCHITECTURE.md says it is: the import graph block there must equal
// the one `go list` reports, and a few rules about what each package pulls
// in (no Redis client outside the Redis store and cmd, no store
// implementation in service, nothing but the standard library in limit)
// must hold. The package has no non-test code.
package archtest
