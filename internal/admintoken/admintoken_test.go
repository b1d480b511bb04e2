package admintoken

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadCreatesThenReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin.token")
	a, err := Load(path)
	if err != nil || len(a) != 43 {
		t.Fatalf("Load = %q, %v", a, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v; want 0600", fi.Mode(), err)
	}
	b, err := Load(path)
	if err != nil || b != a {
		t.Fatalf("second Load = %q, %v; want %q", b, err, a)
	}
	if err := os.WriteFile(path, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("Load of an empty file succeeded")
	}
}
