package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roamfed/roamfed/regions"
)

// The ports of a region, by role; every deployment uses these.
var standardPorts = map[string]int{"client": 7100, "roaming": 7200, "admin": 7300, "metrics": 7400}

// listenFlag is the regiond flag that sets where each role listens.
var listenFlag = map[string]string{"client": "client-addr", "roaming": "roaming-addr", "admin": "admin-addr", "metrics": "metrics-addr"}

var (
	flagsOnce sync.Once
	flagSet   map[string]bool
	flagsErr  error
)

// regiondFlags builds regiond and reads its flags from --help, so that the
// files are checked against the binary they will run.
func regiondFlags(t *testing.T) map[string]bool {
	t.Helper()
	flagsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "roamfed-deploy-test")
		if err != nil {
			flagsErr = err
			return
		}
		defer os.RemoveAll(dir)
		// go test puts its own go command first in PATH.
		gobin, err := exec.LookPath("go")
		if err != nil {
			flagsErr = err
			return
		}
		bin := filepath.Join(dir, "regiond")
		build := exec.Command(gobin, "build", "-o", bin, "github.com/roamfed/roamfed/cmd/regiond")
		if out, err := build.CombinedOutput(); err != nil {
			flagsErr = errors.New("go build regiond: " + err.Error() + "\n" + string(out))
			return
		}
		out, err := exec.Command(bin, "--help").Output()
		if err != nil {
			flagsErr = errors.New("regiond --help: " + err.Error())
			return
		}
		flagSet = make(map[string]bool)
		for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
			flagSet[m[1]] = true
		}
		if len(flagSet) < 5 {
			flagsErr = errors.New("regiond --help shows too few flags:\n" + string(out))
		}
	})
	if flagsErr != nil {
		t.Fatal(flagsErr)
	}
	return flagSet
}

// parseArgs reads a regiond command line ("--flag value" or "--flag=value")
// into its flags, failing on one regiond does not have.
func parseArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	known := regiondFlags(t)
	out := make(map[string]string)
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Errorf("%s: argument %q is not a flag; regiond takes no arguments", where, a)
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		if !known[name] {
			t.Errorf("%s: regiond has no flag --%s", where, name)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				t.Errorf("%s: --%s has no value", where, name)
				continue
			}
			i++
			value = args[i]
		}
		if _, dup := out[name]; dup {
			t.Errorf("%s: --%s given twice", where, name)
		}
		out[name] = value
	}
	// regiond's own rule: a federated region needs its certificates.
	if out["federation"] != "" && out["certs"] == "" {
		t.Errorf("%s: --federation without --certs; regiond refuses to start", where)
	}
	return out
}

// certFiles are the files regiond reads from --certs for region.
func certFiles(region string) []string {
	return []string{"ca.pem", region + ".pem", region + "-key.pem"}
}

func portOf(t *testing.T, where, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: port of %q: %v", where, addr, err)
	}
	return n
}

func hostOf(t *testing.T, where, addr string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	return h
}

// roleAddrs returns a federation entry's addresses by role.
func roleAddrs(r regions.Region) map[string]string {
	return map[string]string{"client": r.ClientAddr, "roaming": r.RoamingAddr, "admin": r.AdminAddr, "metrics": r.MetricsAddr}
}

// checkFederation checks a federation file's entry for a region: every
// role has an address, on the standard port.
func checkFederation(t *testing.T, where string, fed *regions.Federation, region string) regions.Region {
	t.Helper()
	r, ok := fed.Region(region)
	if !ok {
		t.Fatalf("%s: region %s is not in federation file %s (it has %v)", where, region, fed.Source, fed.Names())
	}
	for role, addr := range roleAddrs(r) {
		if addr == "" {
			t.Errorf("%s: %s has no %s address", fed.Source, region, role)
			continue
		}
		if p := portOf(t, fed.Source, addr); p != standardPorts[role] {
			t.Errorf("%s: %s %s address %s, want port %d", fed.Source, region, role, addr, standardPorts[role])
		}
	}
	return r
}

type dockerfile struct {
	froms      []string
	user       string
	expose     []int
	volumes    []string
	entrypoint []string
	cmd        []string
	text       string
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := dockerfile{text: string(raw)}
	// Join continued lines, drop comments.
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(raw), "\n") {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "#") && cur.Len() == 0 {
			continue
		}
		if s, ok := strings.CutSuffix(tl, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(tl)
		if cur.Len() > 0 {
			lines = append(lines, cur.String())
		}
		cur.Reset()
	}
	jsonArray := func(s string) []string {
		var v []string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("Dockerfile: %q is not a JSON array (exec form): %v", s, err)
		}
		return v
	}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d.froms = append(d.froms, rest)
		case "USER":
			d.user = rest
		case "EXPOSE":
			for _, f := range strings.Fields(rest) {
				p, err := strconv.Atoi(strings.TrimSuffix(f, "/tcp"))
				if err != nil {
					t.Fatalf("Dockerfile: EXPOSE %q: %v", f, err)
				}
				d.expose = append(d.expose, p)
			}
		case "VOLUME":
			d.volumes = append(d.volumes, jsonArray(rest)...)
		case "ENTRYPOINT":
			d.entrypoint = jsonArray(rest)
		case "CMD":
			d.cmd = jsonArray(rest)
		}
	}
	return d
}

func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	if len(d.froms) < 2 {
		t.Errorf("Dockerfile has %d stages; want a build stage and a runtime stage", len(d.froms))
	}
	if final := d.froms[len(d.froms)-1]; !strings.Contains(final, "distroless/static") && final != "scratch" {
		t.Errorf("runtime stage FROM %s; want distroless static or scratch (a static binary needs nothing else)", final)
	}
	if !strings.Contains(d.text, "CGO_ENABLED=0") {
		t.Error("Dockerfile does not build with CGO_ENABLED=0")
	}
	if u, _, _ := strings.Cut(d.user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("runtime user %q; want a non-root user", d.user)
	}
	for role, p := range standardPorts {
		if !slices.Contains(d.expose, p) {
			t.Errorf("EXPOSE %v lacks the %s port %d", d.expose, role, p)
		}
	}
	if len(d.entrypoint) != 1 || path.Base(d.entrypoint[0]) != "regiond" {
		t.Errorf("ENTRYPOINT %v; want regiond", d.entrypoint)
	}
	args := parseArgs(t, "Dockerfile CMD", d.cmd)
	if !slices.Contains(d.volumes, args["data"]) {
		t.Errorf("CMD --data %q is not a VOLUME (%v)", args["data"], d.volumes)
	}
	for role, flag := range listenFlag {
		if v, ok := args[flag]; ok && portOf(t, "Dockerfile CMD", v) != standardPorts[role] {
			t.Errorf("CMD --%s %s: want port %d", flag, v, standardPorts[role])
		}
	}
}

type composeFile struct {
	Services map[string]struct {
		Hostname string   `yaml:"hostname"`
		Image    string   `yaml:"image"`
		Command  []string `yaml:"command"`
		Volumes  []string `yaml:"volumes"`
		Ports    []string `yaml:"ports"`
		Build    *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Configs []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"configs"`
		Secrets []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"secrets"`
	} `yaml:"services"`
	Configs map[string]struct {
		File string `yaml:"file"`
	} `yaml:"configs"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestCompose(t *testing.T) {
	raw, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("compose/compose.yaml: %v", err)
	}
	if len(c.Services) != 3 {
		t.Errorf("compose file has %d services; want three regions", len(c.Services))
	}
	expose := readDockerfile(t).expose
	hostPorts := make(map[string]string)
	var feds []string
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		where := "compose service " + name
		if s.Build == nil || filepath.Clean(filepath.Join("compose", s.Build.Context, s.Build.Dockerfile)) != filepath.Join("..", "deploy", "Dockerfile") {
			t.Errorf("%s: build %+v; want deploy/Dockerfile from the repository root", where, s.Build)
		}
		args := parseArgs(t, where, s.Command)
		if args["region"] != name || s.Hostname != name {
			t.Errorf("%s: --region %q, hostname %q; want both %q (the federation file names services)", where, args["region"], s.Hostname, name)
		}

		// The federation file is a config mounted where --federation says.
		fedPath := args["federation"]
		var fedFile string
		for _, cf := range s.Configs {
			if cf.Target == fedPath {
				fedFile = c.Configs[cf.Source].File
			}
		}
		if fedFile == "" {
			t.Fatalf("%s: --federation %q is not a config's target", where, fedPath)
		}
		feds = append(feds, fedFile)
		fed, err := regions.Load(filepath.Join("compose", fedFile))
		if err != nil {
			t.Fatal(err)
		}
		r := checkFederation(t, where, fed, name)
		for role, addr := range roleAddrs(r) {
			if h := hostOf(t, fed.Source, addr); h != name {
				t.Errorf("%s: %s's %s address %s; want host %s, the service name", fed.Source, name, role, addr, name)
			}
		}

		// The data directory is a named volume.
		found := false
		for _, v := range s.Volumes {
			vol, target, _ := strings.Cut(v, ":")
			if target == args["data"] {
				found = true
				if _, ok := c.Volumes[vol]; !ok {
					t.Errorf("%s: volume %q is not declared", where, vol)
				}
			}
		}
		if !found {
			t.Errorf("%s: --data %q is not a volume mount (%v)", where, args["data"], s.Volumes)
		}

		// The CA, the region's certificate and its key are mounted in
		// --certs, from the directory roamctl certs init writes.
		for _, f := range certFiles(name) {
			want := path.Join(args["certs"], f)
			mounted := false
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) >= 2 && parts[1] == want {
					mounted = true
					if parts[0] != "./certs/"+f {
						t.Errorf("%s: %s comes from %s; want ./certs/%s", where, want, parts[0], f)
					}
					if len(parts) < 3 || parts[2] != "ro" {
						t.Errorf("%s: %s is mounted writable", where, want)
					}
				}
			}
			if !mounted {
				t.Errorf("%s: %s is not mounted", where, want)
			}
		}

		// The admin token is a secret.
		found = false
		for _, sc := range s.Secrets {
			target := sc.Target
			if !strings.HasPrefix(target, "/") {
				target = "/run/secrets/" + target
			}
			if target == args["admin-token-file"] {
				found = true
				if _, ok := c.Secrets[sc.Source]; !ok {
					t.Errorf("%s: secret %q is not declared", where, sc.Source)
				}
			}
		}
		if !found {
			t.Errorf("%s: --admin-token-file %q is not a secret's target", where, args["admin-token-file"])
		}

		// Published ports are the region's own, and each host port is
		// used once.
		published := make(map[int]bool)
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q; want 127.0.0.1:HOST:CONTAINER (loopback only)", where, p)
				continue
			}
			cp, _ := strconv.Atoi(parts[2])
			published[cp] = true
			if !slices.Contains(expose, cp) {
				t.Errorf("%s: publishes %d, which the image does not EXPOSE", where, cp)
			}
			if other, dup := hostPorts[parts[1]]; dup {
				t.Errorf("%s: host port %s is also %s's", where, parts[1], other)
			}
			hostPorts[parts[1]] = name
		}
		for _, role := range []string{"client", "admin", "metrics"} {
			if p := portOf(t, fed.Source, roleAddrs(r)[role]); !published[p] {
				t.Errorf("%s: the %s port %d is not published", where, role, p)
			}
		}
		if published[standardPorts["roaming"]] {
			t.Errorf("%s: publishes the roaming port; region-to-region traffic stays on the compose network", where)
		}
	}
	slices.Sort(feds)
	if feds = slices.Compact(feds); len(feds) != 1 {
		t.Errorf("regions run with different federation files %v", feds)
	}
}

// readEnv reads a systemd EnvironmentFile (KEY=VALUE lines).
func readEnv(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Errorf("%s: line %q is not KEY=VALUE", file, l)
			continue
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env
}

// readUnit reads the keys of a unit file as "Section.Key", each with its
// values in order.
func readUnit(t *testing.T, file string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	keys := make(map[string][]string)
	section := ""
	for _, l := range strings.Split(string(raw), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Errorf("%s: line %q is not Key=Value", file, l)
				continue
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

func TestSystemd(t *testing.T) {
	keys := readUnit(t, "systemd/regiond@.service")
	last := func(k string) string {
		if v := keys[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	exec := strings.Fields(last("Service.ExecStart"))
	if len(exec) == 0 || exec[0] != "/usr/local/bin/regiond" {
		t.Fatalf("ExecStart %v; want /usr/local/bin/regiond ...", exec)
	}
	if got := last("Service.EnvironmentFile"); got != "/etc/roamfed/%i.env" {
		t.Errorf("EnvironmentFile %q; want /etc/roamfed/%%i.env", got)
	}
	stop, err := time.ParseDuration(last("Service.TimeoutStopSec"))
	if err != nil || stop <= 10*time.Second {
		t.Errorf("TimeoutStopSec %q; want longer than regiond's --shutdown-timeout (10s)", last("Service.TimeoutStopSec"))
	}
	// Credentials by id (specifiers unexpanded) and source.
	creds := make(map[string]string)
	for _, c := range keys["Service.LoadCredential"] {
		id, src, _ := strings.Cut(c, ":")
		creds[id] = src
		if !strings.HasPrefix(src, "/etc/roamfed/") {
			t.Errorf("LoadCredential %s reads %q; want a file in /etc/roamfed", id, src)
		}
	}

	envs, err := filepath.Glob("systemd/*.env")
	if err != nil || len(envs) == 0 {
		t.Fatalf("no env files in systemd/: %v", err)
	}
	fedFiles := make(map[string]bool)
	for _, file := range envs {
		region := strings.TrimSuffix(filepath.Base(file), ".env")
		env := readEnv(t, file)
		// Expand as systemd does: specifiers, ${VAR} as one word, $VAR
		// split on white space.
		var args []string
		for _, w := range exec[1:] {
			w = strings.ReplaceAll(w, "%i", region)
			w = strings.ReplaceAll(w, "%d", "/run/credentials/regiond@"+region+".service")
			switch {
			case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
				args = append(args, env[w[2:len(w)-1]])
			case strings.HasPrefix(w, "$"):
				args = append(args, strings.Fields(env[w[1:]])...)
			default:
				args = append(args, w)
			}
		}
		a := parseArgs(t, file, args)
		if a["region"] != region {
			t.Errorf("%s: --region %q; want %q", file, a["region"], region)
		}
		if want := "/var/lib/" + strings.ReplaceAll(last("Service.StateDirectory"), "%i", region); a["data"] != want {
			t.Errorf("%s: --data %q; want %s, the unit's StateDirectory", file, a["data"], want)
		}
		credDir := "/run/credentials/regiond@" + region + ".service"
		tokenCred, ok := strings.CutPrefix(a["admin-token-file"], credDir+"/")
		if _, loaded := creds[tokenCred]; !ok || !loaded {
			t.Errorf("%s: --admin-token-file %q is not a credential (LoadCredential ids %v)", file, a["admin-token-file"], slices.Sorted(maps.Keys(creds)))
		}
		if a["certs"] != credDir {
			t.Errorf("%s: --certs %q; want the credentials directory %s", file, a["certs"], credDir)
		}
		for _, f := range certFiles(region) {
			id := strings.ReplaceAll(f, region, "%i")
			if src, ok := creds[id]; !ok || path.Base(src) != id {
				t.Errorf("%s: no LoadCredential=%s:/etc/roamfed/.../%s for --certs", file, id, id)
			}
		}
		if !strings.HasPrefix(a["federation"], "/etc/roamfed/") {
			t.Errorf("%s: --federation %q; want a file in /etc/roamfed", file, a["federation"])
		}
		fedFiles[a["federation"]] = true
	}
	if len(fedFiles) != 1 {
		t.Errorf("regions run with different federation files %v", fedFiles)
	}
}

// k8s objects, as much of them as the checks read.
type (
	meta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	}
	object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   meta   `yaml:"metadata"`
	}
	service struct {
		Spec struct {
			ClusterIP                string            `yaml:"clusterIP"`
			PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
			Selector                 map[string]string `yaml:"selector"`
			Ports                    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort any    `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	probe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
	statefulSet struct {
		Spec struct {
			ServiceName string `yaml:"serviceName"`
			Selector    struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template struct {
				Metadata meta `yaml:"metadata"`
				Spec     struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
					SecurityContext               struct {
						RunAsNonRoot bool `yaml:"runAsNonRoot"`
					} `yaml:"securityContext"`
					Containers []struct {
						Name  string   `yaml:"name"`
						Args  []string `yaml:"args"`
						Ports []struct {
							Name          string `yaml:"name"`
							ContainerPort int    `yaml:"containerPort"`
						} `yaml:"ports"`
						ReadinessProbe *probe `yaml:"readinessProbe"`
						LivenessProbe  *probe `yaml:"livenessProbe"`
						VolumeMounts   []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
						Secret *struct {
							SecretName string `yaml:"secretName"`
							Items      []struct {
								Key  string `yaml:"key"`
								Path string `yaml:"path"`
							} `yaml:"items"`
						} `yaml:"secret"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
			VolumeClaimTemplates []struct {
				Metadata meta `yaml:"metadata"`
			} `yaml:"volumeClaimTemplates"`
		} `yaml:"spec"`
	}
	configMap struct {
		Data map[string]string `yaml:"data"`
	}
	secret struct {
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
)

type k8sDoc struct {
	object
	file string
	raw  []byte
}

func readK8s(t *testing.T) []k8sDoc {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var docs []k8sDoc
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			b, err := yaml.Marshal(&node)
			if err != nil {
				t.Fatal(err)
			}
			d := k8sDoc{file: f, raw: b}
			if err := node.Decode(&d.object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs = append(docs, d)
		}
	}
	return docs
}

func decodeAs(t *testing.T, d k8sDoc, v any) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(d.raw))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", d.file, d.Kind, d.Metadata.Name, err)
	}
}

func TestKubernetes(t *testing.T) {
	docs := readK8s(t)
	var kust struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	raw, err := os.ReadFile("k8s/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kust.Resources, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}

	var (
		ns       string
		sts      *statefulSet
		services = make(map[string]service)
		cms      = make(map[string]configMap)
		secrets  = make(map[string]secret)
	)
	for _, d := range docs {
		switch d.Kind {
		case "Namespace":
			ns = d.Metadata.Name
			continue
		case "StatefulSet":
			sts = new(statefulSet)
			decodeAs(t, d, sts)
		case "Service":
			var s service
			decodeAs(t, d, &s)
			services[d.Metadata.Name] = s
		case "ConfigMap":
			var c configMap
			decodeAs(t, d, &c)
			cms[d.Metadata.Name] = c
		case "Secret":
			var s secret
			decodeAs(t, d, &s)
			secrets[d.Metadata.Name] = s
		default:
			t.Errorf("%s: unexpected kind %s", d.file, d.Kind)
		}
		if d.Metadata.Namespace != kust.Namespace {
			t.Errorf("%s: %s %s in namespace %q; want %q", d.file, d.Kind, d.Metadata.Name, d.Metadata.Namespace, kust.Namespace)
		}
	}
	if ns == "" || ns != kust.Namespace {
		t.Fatalf("Namespace %q, kustomization namespace %q; want one namespace for the region", ns, kust.Namespace)
	}
	if sts == nil {
		t.Fatal("no StatefulSet")
	}
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want regiond alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !pod.SecurityContext.RunAsNonRoot {
		t.Error("the pod may run as root")
	}
	if pod.TerminationGracePeriodSeconds <= 10 {
		t.Errorf("terminationGracePeriodSeconds %d; want longer than regiond's --shutdown-timeout (10s)", pod.TerminationGracePeriodSeconds)
	}
	for k, v := range sts.Spec.Selector.MatchLabels {
		if sts.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("StatefulSet selector %s=%s does not match the pod's labels", k, v)
		}
	}
	args := parseArgs(t, "StatefulSet args", c.Args)
	region := args["region"]
	if want := "roamfed-" + region; ns != want {
		t.Errorf("namespace %s for region %s; want %s", ns, region, want)
	}

	mountOf := func(file string) (volume, rel string) {
		t.Helper()
		for _, m := range c.VolumeMounts {
			if r, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/"); ok {
				return m.Name, r
			}
			if file == m.MountPath {
				return m.Name, ""
			}
		}
		t.Fatalf("%s is under no volume mount", file)
		return "", ""
	}

	// --data is the volume claim.
	if vol, rel := mountOf(args["data"]); rel != "" || !slices.ContainsFunc(sts.Spec.VolumeClaimTemplates, func(v struct {
		Metadata meta `yaml:"metadata"`
	}) bool {
		return v.Metadata.Name == vol
	}) {
		t.Errorf("--data %s is not the mount of a volume claim", args["data"])
	}
	volume := func(name string) int {
		for i, v := range pod.Volumes {
			if v.Name == name {
				return i
			}
		}
		t.Fatalf("no volume %s", name)
		return -1
	}

	// --federation is a key of the mounted ConfigMap, a valid federation
	// file with this region in it.
	vol, key := mountOf(args["federation"])
	v := pod.Volumes[volume(vol)]
	if v.ConfigMap == nil {
		t.Fatalf("--federation %s: volume %s is not a ConfigMap", args["federation"], vol)
	}
	text, ok := cms[v.ConfigMap.Name].Data[key]
	if !ok {
		t.Fatalf("--federation %s: ConfigMap %s has no key %s", args["federation"], v.ConfigMap.Name, key)
	}
	fed, err := regions.Parse("k8s ConfigMap "+v.ConfigMap.Name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	r := checkFederation(t, "StatefulSet", fed, region)

	// --admin-token-file is a key of the mounted Secret.
	vol, key = mountOf(args["admin-token-file"])
	v = pod.Volumes[volume(vol)]
	if v.Secret == nil {
		t.Fatalf("--admin-token-file %s: volume %s is not a Secret", args["admin-token-file"], vol)
	}
	if len(v.Secret.Items) > 0 {
		mapped := ""
		for _, it := range v.Secret.Items {
			if it.Path == key {
				mapped = it.Key
			}
		}
		key = mapped
	}
	s := secrets[v.Secret.SecretName]
	if _, ok := s.StringData[key]; !ok {
		if _, ok := s.Data[key]; !ok {
			t.Errorf("--admin-token-file %s: Secret %s has no key %q", args["admin-token-file"], v.Secret.SecretName, key)
		}
	}

	// --certs is a mount of the Secret's CA, certificate and key.
	vol, key = mountOf(args["certs"])
	v = pod.Volumes[volume(vol)]
	if key != "" || v.Secret == nil {
		t.Fatalf("--certs %s is not the mount of a Secret volume", args["certs"])
	}
	s = secrets[v.Secret.SecretName]
	for _, f := range certFiles(region) {
		k := f
		if len(v.Secret.Items) > 0 {
			k = ""
			for _, it := range v.Secret.Items {
				if it.Path == f {
					k = it.Key
				}
			}
			if k == "" {
				t.Errorf("--certs %s: the Secret volume %s has no item for %s", args["certs"], vol, f)
				continue
			}
		}
		_, inString := s.StringData[k]
		_, inData := s.Data[k]
		if !inString && !inData {
			t.Errorf("--certs %s: Secret %s has no key %q", args["certs"], v.Secret.SecretName, k)
		}
	}

	// Each role listens on its container port, which a Service exposes
	// on the port the federation file gives, under the Service's name.
	containerPorts := make(map[string]int)
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	expose := readDockerfile(t).expose
	for role, addr := range roleAddrs(r) {
		cp, ok := containerPorts[role]
		if !ok {
			t.Errorf("no container port named %s", role)
			continue
		}
		if !slices.Contains(expose, cp) {
			t.Errorf("container port %s %d is not EXPOSEd by the image", role, cp)
		}
		if flag := args[listenFlag[role]]; flag == "" {
			t.Errorf("no --%s: the pod would listen on the federation file's %s, a Service address", listenFlag[role], addr)
		} else if p := portOf(t, "--"+listenFlag[role], flag); p != cp {
			t.Errorf("--%s %s, container port %s %d", listenFlag[role], flag, role, cp)
		}
		// roaming.roamfed-ap.svc.cluster.local:7200 → Service roaming.
		host := hostOf(t, fed.Source, addr)
		parts := strings.Split(host, ".")
		if len(parts) < 2 || parts[1] != ns {
			t.Errorf("federation file: %s %s address %s is not a Service of namespace %s", region, role, addr, ns)
			continue
		}
		svc, ok := services[parts[0]]
		if !ok {
			t.Errorf("federation file: %s %s address %s names no Service %s", region, role, addr, parts[0])
			continue
		}
		for k, want := range svc.Spec.Selector {
			if sts.Spec.Template.Metadata.Labels[k] != want {
				t.Errorf("Service %s selects %s=%s; the pod has %q", parts[0], k, want, sts.Spec.Template.Metadata.Labels[k])
			}
		}
		found := false
		for _, sp := range svc.Spec.Ports {
			target := sp.TargetPort
			if target == role || target == cp {
				found = true
				if sp.Port != portOf(t, fed.Source, addr) {
					t.Errorf("Service %s port %d; federation file %s", parts[0], sp.Port, addr)
				}
			}
		}
		if !found {
			t.Errorf("Service %s has no port to the container's %s port", parts[0], role)
		}
	}
	if gov, ok := services[sts.Spec.ServiceName]; !ok || gov.Spec.ClusterIP != "None" {
		t.Errorf("serviceName %q is not a headless Service", sts.Spec.ServiceName)
	}

	for _, p := range []struct {
		name string
		pr   *probe
		path string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.pr == nil {
			t.Errorf("no %s probe", p.name)
			continue
		}
		if p.pr.HTTPGet.Path != p.path || (p.pr.HTTPGet.Port != "metrics" && p.pr.HTTPGet.Port != containerPorts["metrics"]) {
			t.Errorf("%s probe GET %s on %v; want %s on the metrics port", p.name, p.pr.HTTPGet.Path, p.pr.HTTPGet.Port, p.path)
		}
	}
}
