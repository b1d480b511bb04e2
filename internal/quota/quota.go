// Package quota builds the status every over-budget refusal carries, on the
// client listener and the roaming listener alike: RESOURCE_EXHAUSTED with an
// errdetails.QuotaFailure naming what was exceeded and, when waiting helps,
// an errdetails.RetryInfo saying how long.
package quota

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Violation is one exceeded budget.
type Violation struct {
	// Subject is who exceeded it: "user:<id>", "region:<name>", ...
	Subject string
	// ID names the budget (errdetails.QuotaFailure_Violation.QuotaId).
	ID          string
	Description string
	// RetryAfter, when positive, is how long to wait before trying again.
	RetryAfter time.Duration
}

// Status returns the RESOURCE_EXHAUSTED status for v with message msg.
func Status(msg string, v Violation) *status.Status {
	st := status.New(codes.ResourceExhausted, msg)
	details := []protoadapt.MessageV1{&errdetails.QuotaFailure{
		Violations: []*errdetails.QuotaFailure_Violation{{
			Subject:     v.Subject,
			Description: v.Description,
			QuotaId:     v.ID,
		}},
	}}
	if v.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(v.RetryAfter)})
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		// Only a marshalling failure gets here; the code and the message
		// still say what happened.
		return st
	}
	return withDetails
}

// Details returns the QuotaFailure and RetryInfo a refusal's status
// carries, each nil when absent.
func Details(st *status.Status) (qf *errdetails.QuotaFailure, ri *errdetails.RetryInfo) {
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.QuotaFailure:
			qf = d
		case *errdetails.RetryInfo:
			ri = d
		}
	}
	return qf, ri
}
