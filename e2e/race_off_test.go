//go:build !race

package e2e

// raceEnabled reports whether the tests were built with -race; the
// binaries under test are built the same way.
const raceEnabled = false
