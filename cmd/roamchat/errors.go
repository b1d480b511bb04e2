package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/cli"
)

// describe turns err into the one line the user reads after "roamchat: op: ".
func (a *app) describe(err error) string {
	switch {
	case errors.Is(err, errNoProfile), errors.Is(err, errNotLoggedIn), errors.Is(err, errSessionExpired):
		return err.Error() + " " + a.loginHint()
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("deadline exceeded (--timeout %s)", a.timeout)
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := describeStatus(st)
	switch st.Code() {
	case codes.Unauthenticated:
		msg += " " + a.loginHint()
	case codes.Unavailable:
		msg += fmt.Sprintf(" (server %s)", a.serverFor(a.prof))
		// What a transport mismatch looks like from each side.
		switch {
		case !a.tls && strings.Contains(st.Message(), "server preface"):
			msg += " (does the region want --tls?)"
		case a.tls && strings.Contains(st.Message(), "first record does not look like a TLS handshake"):
			msg += " (the region does not speak TLS; drop --tls)"
		}
	case codes.DeadlineExceeded:
		msg += fmt.Sprintf(" (--timeout %s)", a.timeout)
	}
	return msg
}

// describeStatus renders a status on one line, with the details a user
// can act on: which quota was hit and when to retry, which field was
// wrong, which precondition failed. Details the message already says are
// left out.
func describeStatus(st *status.Status) string {
	msg := cli.CodeName(st.Code())
	// A region joins several validation errors with newlines.
	if m := strings.Join(strings.Fields(strings.ReplaceAll(st.Message(), "\n", "; ")), " "); m != "" {
		msg += ": " + m
	}
	var extra []string
	add := func(s string) {
		if s != "" && !strings.Contains(msg, s) && !slices.Contains(extra, s) {
			extra = append(extra, s)
		}
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				add(quotaText(v, msg))
			}
		case *errdetails.RetryInfo:
			if d.GetRetryDelay() != nil {
				add("retry in " + d.GetRetryDelay().AsDuration().Round(time.Millisecond).String())
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				add(v.GetField() + ": " + v.GetDescription())
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				add(v.GetDescription())
			}
		}
	}
	if len(extra) > 0 {
		msg += " (" + strings.Join(extra, "; ") + ")"
	}
	return msg
}

// quotaText is a quota violation's description, with its subject unless
// the status message names it already.
func quotaText(v *errdetails.QuotaFailure_Violation, msg string) string {
	desc, subj := v.GetDescription(), v.GetSubject()
	switch {
	case desc == "":
		return subj
	case strings.Contains(msg, desc):
		return ""
	case subj == "" || strings.Contains(msg, subj):
		return desc
	}
	return subj + ": " + desc
}

// loginHint tells the user how to get a session for this profile.
func (a *app) loginHint() string {
	user := "USER"
	if a.prof != nil && a.prof.Username != "" {
		user = a.prof.Username
	}
	cmd := "roamchat login " + user
	if a.profile != "" && a.profile != "default" {
		cmd = "roamchat --profile " + a.profile + " login " + user
	}
	return "(run `" + cmd + "`)"
}
