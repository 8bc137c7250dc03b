// Package fcdelay is a fault for the lab's self-tests, never part of a real cluster's DNS:
// `fcdelay DURATION` in a server block holds every query that long before the rest of the
// chain answers it (a slow DNS server, which the lab cannot make with tc: no netem here).
package fcdelay

import (
	"context"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

const name = "fcdelay"

func init() { plugin.Register(name, setup) }

func setup(c *caddy.Controller) error {
	c.Next() // the directive's name
	args := c.RemainingArgs()
	if len(args) != 1 {
		return plugin.Error(name, c.ArgErr())
	}
	delay, err := time.ParseDuration(args[0])
	if err != nil || delay < 0 {
		return plugin.Error(name, c.Errf("not a duration: %q", args[0]))
	}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		return Delay{Next: next, Delay: delay}
	})
	return nil
}

// Delay holds each query for Delay, then passes it on.
type Delay struct {
	Next  plugin.Handler
	Delay time.Duration
}

// ServeDNS implements plugin.Handler.
func (d Delay) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	timer := time.NewTimer(d.Delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return dns.RcodeServerFailure, ctx.Err()
	}
	return plugin.NextOrFailure(name, d.Next, ctx, w, r)
}

// Name implements plugin.Handler.
func (d Delay) Name() string { return name }
