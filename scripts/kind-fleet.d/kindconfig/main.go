// Command kindconfig validates kind cluster config files with kind's own code, without a
// container runtime.
//
// For each file it runs kind's public create path, sigs.k8s.io/kind/pkg/cluster
// Provider.Create with CreateWithConfigFile: kind loads the file (strict decoding, unknown
// fields are errors), applies its defaults and runs its validation. The provider's container
// runtime is this program itself, put first on PATH under the name "docker": it answers
// "docker info" and "docker ps" (no such cluster yet) and stops kind at the first step of
// provisioning, which it records. A file is valid when kind got as far as provisioning.
//
// Usage: kindconfig CONFIG.yaml...  (one JSON line per file on stdout; exit 1 if any is invalid)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/log"
)

const stubLogEnv = "FLEETCHECK_KINDCONFIG_STUB_LOG"

// result is what is printed for one config file.
type result struct {
	Path       string               `json:"path"`
	Valid      bool                 `json:"valid"`
	Error      string               `json:"error,omitempty"`
	Name       string               `json:"name,omitempty"`
	Networking *v1alpha4.Networking `json:"networking,omitempty"`
	Nodes      []map[string]string  `json:"nodes,omitempty"`
	Images     []string             `json:"images,omitempty"`
}

func main() {
	if filepath.Base(os.Args[0]) == "docker" {
		os.Exit(stub(os.Args[1:]))
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: kindconfig CONFIG.yaml...")
		os.Exit(2)
	}
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kindconfig:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

// run validates every file and prints one JSON line per file.
func run(paths []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 2, err
	}
	dir, err := os.MkdirTemp("", "kindconfig-")
	if err != nil {
		return 2, err
	}
	defer os.RemoveAll(dir)
	if err := os.Symlink(self, filepath.Join(dir, "docker")); err != nil {
		return 2, err
	}
	os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	code := 0
	for i, path := range paths {
		res := validate(path, dir, i)
		if !res.Valid {
			code = 1
		}
		line, err := json.Marshal(res)
		if err != nil {
			return 2, err
		}
		fmt.Println(string(line))
	}
	return code, nil
}

// validate runs kind's create path on one file up to provisioning.
func validate(path, dir string, index int) result {
	res := result{Path: path}
	stubLog := filepath.Join(dir, fmt.Sprintf("stub-%d.log", index))
	os.Setenv(stubLogEnv, stubLog)
	provider := cluster.NewProvider(cluster.ProviderWithDocker(), cluster.ProviderWithLogger(log.NoopLogger{}))
	// an explicit kubeconfig path: kind's cleanup after the stopped provisioning must never
	// touch the user's kubeconfig
	kubeconfig := filepath.Join(dir, fmt.Sprintf("kubeconfig-%d", index))
	createErr := provider.Create("", cluster.CreateWithConfigFile(path),
		cluster.CreateWithKubeconfigPath(kubeconfig), cluster.CreateWithDisplayUsage(false),
		cluster.CreateWithDisplaySalutation(false))
	calls, _ := os.ReadFile(stubLog)
	for _, line := range strings.Split(string(calls), "\n") {
		if rest, ok := strings.CutPrefix(line, "inspect --type=image "); ok {
			res.Images = append(res.Images, rest)
		}
	}
	switch {
	case createErr == nil:
		res.Error = "kind created a cluster without a container runtime (stub not reached)"
	case len(res.Images) == 0:
		res.Error = createErr.Error()
	default:
		res.Valid = true
	}
	if res.Valid {
		describe(path, &res)
	}
	return res
}

// describe records the config as kind's v1alpha4 types read it, defaults applied.
func describe(path string, res *result) {
	raw, err := os.ReadFile(path)
	if err != nil {
		res.Valid, res.Error = false, err.Error()
		return
	}
	cfg := &v1alpha4.Cluster{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		res.Valid, res.Error = false, err.Error()
		return
	}
	v1alpha4.SetDefaultsCluster(cfg)
	res.Name = cfg.Name
	res.Networking = &cfg.Networking
	for _, n := range cfg.Nodes {
		res.Nodes = append(res.Nodes, map[string]string{"role": string(n.Role), "image": n.Image})
	}
}

// stub plays "docker" for kind: info, an empty ps, then stops at the node image check.
func stub(args []string) int {
	if logPath := os.Getenv(stubLogEnv); logPath != "" {
		if f, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			fmt.Fprintln(f, strings.Join(args, " "))
			f.Close()
		}
	}
	switch {
	case len(args) > 0 && args[0] == "info":
		fmt.Println(`{"CgroupDriver":"systemd","CgroupVersion":"2","MemoryLimit":true,` +
			`"PidsLimit":true,"CPUShares":true,"SecurityOptions":["name=seccomp,profile=builtin"]}`)
		return 0
	case len(args) > 0 && args[0] == "ps":
		return 0
	case len(args) > 1 && args[0] == "inspect" && args[1] == "--type=image":
		// present locally: kind does not try to pull, and goes on to the network
		return 0
	default:
		fmt.Fprintln(os.Stderr, "kindconfig stub: provisioning stopped here")
		return 1
	}
}
