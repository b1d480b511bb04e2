package resourcepool

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"google.golang.org/grpc/metadata"
)

var regionNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func incoming(vals ...string) context.Context {
	md := metadata.MD{}
	for _, v := range vals {
		md.Append(RegionMetadataKey, v)
	}
	return metadata.NewIncomingContext(context.Background(), md)
}

func TestRegionFromContext(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		want    string
		wantErr error
	}{
		{name: "one name", ctx: incoming("eu"), want: "eu"},
		{name: "longest name", ctx: incoming("a1234567890123456789012345678901"), want: "a1234567890123456789012345678901"},
		{name: "dashes and digits", ctx: incoming("us-east-2"), want: "us-east-2"},
		{name: "no metadata", ctx: context.Background(), wantErr: ErrNoRegion},
		{name: "no value", ctx: incoming(), wantErr: ErrNoRegion},
		{name: "two values", ctx: incoming("eu", "us"), wantErr: ErrNoRegion},
		{name: "empty", ctx: incoming(""), wantErr: ErrBadRegionName},
		{name: "upper case", ctx: incoming("EU"), wantErr: ErrBadRegionName},
		{name: "leading digit", ctx: incoming("1eu"), wantErr: ErrBadRegionName},
		{name: "leading dash", ctx: incoming("-eu"), wantErr: ErrBadRegionName},
		{name: "too long", ctx: incoming("a12345678901234567890123456789012"), wantErr: ErrBadRegionName},
		{name: "space", ctx: incoming("eu "), wantErr: ErrBadRegionName},
		{name: "newline", ctx: incoming("eu\n"), wantErr: ErrBadRegionName},
		{name: "non-ASCII", ctx: incoming("éu"), wantErr: ErrBadRegionName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RegionFromContext(tt.ctx)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("RegionFromContext = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzRegionName checks the hand-written name check against the regular
// expression that defines it, directly and through RegionFromContext.
func FuzzRegionName(f *testing.F) {
	for _, s := range []string{"", "eu", "us-east-1", "EU", "1a", "a-", "a\x00", "é",
		"a1234567890123456789012345678901", "a12345678901234567890123456789012", "eu\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := regionNameRE.MatchString(s)
		if got := ValidRegionName(s); got != want {
			t.Fatalf("ValidRegionName(%q) = %v; regexp says %v", s, got, want)
		}
		got, err := RegionFromContext(incoming(s))
		if want != (err == nil) {
			t.Fatalf("RegionFromContext(%q) = %q, %v; regexp says valid=%v", s, got, err, want)
		}
		if err == nil && got != s {
			t.Fatalf("RegionFromContext(%q) = %q", s, got)
		}
		if err != nil && !errors.Is(err, ErrBadRegionName) {
			t.Fatalf("RegionFromContext(%q) = %v; want ErrBadRegionName", s, err)
		}
	})
}
