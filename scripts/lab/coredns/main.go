// Command coredns is the fleetcheck lab's CoreDNS: upstream CoreDNS with only the plugins the
// lab's Corefiles use. There is deliberately no forward (or grpc, etcd, cloud) plugin: the lab
// never sends a query to an upstream resolver. Cross-cluster names come from the kubernetes
// plugin reading a peer cluster's API (`kubeconfig PATH CONTEXT`).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// a fault for the lab's self-tests only (a slow server): unused by every Corefile the lab
	// writes
	_ "fleetcheck.lab/coredns/fcdelay"

	// Each import registers one plugin; keep this list and directives below in step.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/transfer"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is the plugin chain, in the relative order of upstream CoreDNS's plugin.cfg
// (a request passes through the plugins in this order, whatever order the Corefile uses).
// metadata, prometheus and transfer are linked in by the kubernetes plugin anyway; listing them
// makes them usable (the stock kubeadm Corefile has `prometheus :9153`).
var directives = []string{
	"metadata",
	"reload",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"fcdelay",
	"loadbalance",
	"rewrite",
	"cache",
	"template",
	"transfer",
	"hosts",
	"kubernetes",
	"loop",
	"whoami",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
