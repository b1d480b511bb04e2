package cli

import "google.golang.org/grpc/codes"

// codeNames are gRPC codes as a person reads them.
var codeNames = map[codes.Code]string{
	codes.Canceled:           "canceled",
	codes.Unknown:            "unknown error",
	codes.InvalidArgument:    "invalid argument",
	codes.DeadlineExceeded:   "deadline exceeded",
	codes.NotFound:           "not found",
	codes.AlreadyExists:      "already exists",
	codes.PermissionDenied:   "permission denied",
	codes.ResourceExhausted:  "resource exhausted",
	codes.FailedPrecondition: "failed precondition",
	codes.Aborted:            "aborted",
	codes.OutOfRange:         "out of range",
	codes.Unimplemented:      "unimplemented",
	codes.Internal:           "internal error",
	codes.Unavailable:        "unavailable",
	codes.DataLoss:           "data loss",
	codes.Unauthenticated:    "unauthenticated",
}

// CodeName is c as a person reads it ("permission denied"); a code
// without a name reads as grpc spells it.
func CodeName(c codes.Code) string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return c.String()
}
