package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// errNoProfile reports that no profile of the asked name has been saved.
var errNoProfile = errors.New("no saved profile")

// errNotLoggedIn reports that the profile holds no session token.
var errNotLoggedIn = errors.New("not logged in")

// profile is what login saves: where the region is and who the user is
// there. It holds a bearer token, so it is stored readable by its owner only.
type profile struct {
	Server     string    `json:"server"`
	Token      string    `json:"token,omitempty"`
	UserID     string    `json:"user_id,omitempty"`
	Username   string    `json:"username,omitempty"`
	HomeRegion string    `json:"home_region,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
}

// profileStore keeps profiles as dir/<name>.json.
type profileStore struct{ dir string }

// defaultProfileStore is $ROAMCHAT_CONFIG_DIR/profiles, or
// os.UserConfigDir()/roamfed/profiles when that is unset.
func defaultProfileStore() (profileStore, error) {
	base := os.Getenv("ROAMCHAT_CONFIG_DIR")
	if base == "" {
		cfg, err := os.UserConfigDir()
		if err != nil {
			return profileStore{}, fmt.Errorf("finding the config directory (set $ROAMCHAT_CONFIG_DIR): %w", err)
		}
		base = filepath.Join(cfg, "roamfed")
	}
	return profileStore{dir: filepath.Join(base, "profiles")}, nil
}

func (s profileStore) path(name string) string {
	return filepath.Join(s.dir, name+".json")
}

// load returns the profile called name; errNoProfile when there is none.
func (s profileStore) load(name string) (*profile, error) {
	path := s.path(name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w %q in %s", errNoProfile, name, s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	var p profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	return &p, nil
}

// save writes p as the profile called name. It replaces any earlier file
// in one rename, so a reader sees the old profile or the new one, and the
// token is never readable by anyone but the owner.
func (s profileStore) save(name string, p *profile) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	// MkdirAll leaves an existing directory as it was; this one is ours.
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(s.dir, "."+name+".*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save profile: %w", err)
	}
	return nil
}

// validProfileName keeps profile names usable as file names anywhere.
func validProfileName(name string) error {
	if name == "" || len(name) > 64 {
		return errors.New("profile name must be 1 to 64 characters")
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("profile name %q must not start with %q", name, name[0])
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("profile name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// loadProfile loads the profile named by --profile, remembering it for
// error hints. A missing profile is not an error here: it returns nil.
func (a *app) loadProfile() (profileStore, *profile, error) {
	store, err := defaultProfileStore()
	if err != nil {
		return store, nil, err
	}
	p, err := store.load(a.profile)
	if errors.Is(err, errNoProfile) {
		return store, nil, nil
	}
	if err != nil {
		return store, nil, err
	}
	a.prof = p
	return store, p, nil
}

// serverFor picks the region address: --server, else the profile's, else
// $ROAMCHAT_SERVER, else the default. The profile wins over the environment
// because its token was issued by that region.
func (a *app) serverFor(p *profile) string {
	switch {
	case a.serverSet:
		return a.server
	case p != nil && p.Server != "":
		return p.Server
	case os.Getenv("ROAMCHAT_SERVER") != "":
		return os.Getenv("ROAMCHAT_SERVER")
	}
	return defaultServer
}
