package main

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/cli"
)

// describe turns err into the one line printed after "roamctl: op: ".
func describe(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded (--timeout)"
	}
	if _, ok := errors.AsType[regionErr](err); ok {
		return err.Error() // it describes its cause itself
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := cli.CodeName(st.Code())
	m := st.Message()
	if st.Code() == codes.Unavailable {
		m = shortError(m)
	}
	if m = oneLine(m); m != "" {
		msg += ": " + m
	}
	if st.Code() == codes.Unauthenticated {
		msg += " (give the region's admin token with --token, --token-file or $" + tokenEnv + ")"
	}
	return msg
}

// regionErr prefixes an error with the region it came from.
type regionErr struct {
	region string
	err    error
}

func (e regionErr) Error() string { return "region " + e.region + ": " + describe(e.err) }
func (e regionErr) Unwrap() error { return e.err }

// shortError cuts grpc's wrapping of a dial error: `connection error: desc
// = "transport: Error while dialing: dial tcp ADDR: connect: connection
// refused"` becomes `dial tcp ADDR: connect: connection refused`.
func shortError(s string) string {
	s = oneLine(s)
	if i := strings.LastIndex(s, "dial tcp "); i >= 0 {
		return strings.TrimSuffix(s[i:], `"`)
	}
	return s
}
