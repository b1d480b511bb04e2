// Command roamctl is the operator CLI of a roamfed federation: it shows the
// regions' status and links, runs link drills, and runs a drill under load
// whose history it checks (DESIGN.md, Guarantees).
//
// Run `roamctl --help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
