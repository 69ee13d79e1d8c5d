package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"umlsd/config"
	"umlsd/netprep"
)

// HostNetwork is what the supervisor changes in the host's network: an
// interface so that the tests of recording and undoing can run without
// touching a network. DefaultHostNetwork is the real one.
type HostNetwork interface {
	Apply(ctx context.Context, guest string, rs netprep.RuleSet) error
	Teardown(ctx context.Context, guest string) error
	OpenTap(name, bridge string) (*netprep.Tap, error)
	DeleteTap(name string, index int) error
	Drops(ctx context.Context, guest string) (netprep.Drops, error)
}

// DefaultHostNetwork is netprep on the host.
func DefaultHostNetwork() HostNetwork { return hostNetwork{netprep.NewFirewall()} }

type hostNetwork struct{ *netprep.Firewall }

func (hostNetwork) OpenTap(name, bridge string) (*netprep.Tap, error) {
	return netprep.OpenTap(name, bridge)
}

func (hostNetwork) DeleteTap(name string, index int) error { return netprep.DeleteTap(name, index) }

// tapRecord names a tap: Index is 0 until it exists.
type tapRecord struct {
	Name  string `json:"name"`
	Index int    `json:"index,omitempty"`
}

// checkBridge checks that the guest's bridge exists.
func (in *inspection) checkBridge(context.Context) error {
	n := in.g.Network
	if err := netprep.CheckBridge(n.Bridge); err != nil {
		return hostErrorf("%s: Bridge=%s: %w", in.g.Path, n.Bridge, err)
	}
	return nil
}

// checkBridgeFilter makes bridged packets pass the firewall (br_netfilter),
// which the preflight does itself and logs; a dry run notes what it would
// do, and fails only if it could not.
func (in *inspection) checkBridgeFilter(ctx context.Context) error {
	if !in.dryRun {
		changed, err := netprep.EnableBridgeFilter(ctx, in.procSys, in.modprobe)
		for _, c := range changed {
			in.log.Event(journal.PriNotice, c+", which the guests' firewalls need")
		}
		if err != nil {
			return hostErrorf("%w", err)
		}
		return nil
	}
	bf, err := netprep.ReadBridgeFilter(in.procSys)
	if err != nil {
		return err
	}
	if !bf.Loaded {
		cmd := exec.CommandContext(ctx, in.modprobe[0], append(in.modprobe[1:], "--dry-run", "br_netfilter")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return hostErrorf("the kernel module br_netfilter, which the guest's firewall needs, is not loaded, and %s failed (%v: %s); install the kernel's modules, or use a kernel with CONFIG_BRIDGE_NETFILTER",
				strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
		}
		in.note("the kernel module br_netfilter, which the guest's firewall needs, is not loaded; the guest's start loads it (to load it at boot: echo br_netfilter >/etc/modules-load.d/br_netfilter.conf)")
	}
	for _, name := range bf.Off {
		in.note("%s is not 1, as the guest's firewall needs; the guest's start sets it (to set it at boot: echo %s=1 >/etc/sysctl.d/50-umlsd.conf)", name, name)
	}
	return nil
}

// checkFirewall resolves the host names of the guest's firewall and
// computes its rules.
func (in *inspection) checkFirewall(ctx context.Context) error {
	// A name that does not resolve may resolve later (the resolver starts
	// after the guest): not a configuration error, retried by the unit.
	addrs, err := netprep.Resolve(ctx, in.g, in.lookup)
	if err != nil {
		return err
	}
	if in.rules, err = netprep.Rules(in.g, addrs); err != nil {
		return configError{err}
	}
	return nil
}

// lookupHost is the host's resolver.
func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// prepareNetwork fences the guest and opens its tap, in that order, each
// recorded before it is made. The caller closes the tap once the kernel
// has its own descriptor.
func (s *Supervisor) prepareNetwork(ctx context.Context, p *plan, st *stateFile) (*netprep.Tap, error) {
	g, n := p.guest, p.guest.Network
	if err := st.add(record{Firewall: g.Name}); err != nil {
		return nil, err
	}
	start := time.Now()
	// Not cut short by a stop: it takes milliseconds, and a stop then
	// undoes it.
	if err := s.net().Apply(context.WithoutCancel(ctx), g.Name, p.rules); err != nil {
		return nil, fmt.Errorf("installing the guest's firewall: %w", err)
	}
	if err := st.add(record{Tap: &tapRecord{Name: n.Tap}}); err != nil {
		return nil, err
	}
	tap, err := s.net().OpenTap(n.Tap, n.Bridge)
	if err != nil {
		return nil, hostErrorf("%s: %w", g.Path, err)
	}
	if err := st.add(record{Tap: &tapRecord{Name: tap.Name, Index: tap.Index}}); err != nil {
		tap.File.Close()
		return nil, err
	}
	s.Log.Event(journal.PriInfo, fmt.Sprintf("the guest's firewall is in place and its tap %s is on %s (%v)", n.Tap, n.Bridge, time.Since(start).Round(time.Millisecond)))
	return tap, nil
}

// logDrops logs what the guest's firewall dropped, before it goes.
func (s *Supervisor) logDrops(ctx context.Context, rs []record) {
	for _, r := range rs {
		if r.Firewall == "" {
			continue
		}
		d, err := s.net().Drops(ctx, r.Firewall)
		switch {
		case err != nil:
			s.Log.Event(journal.PriWarning, fmt.Sprintf("reading the firewall's counters: %v", err))
		default:
			pri := journal.PriInfo
			if d.Spoofed > 0 {
				pri = journal.PriWarning
			}
			s.Log.Event(pri, fmt.Sprintf("the firewall dropped %d packets from the guest with a source that is not its own, and %d its policy does not allow", d.Spoofed, d.Policy))
		}
	}
}

// undoNetwork undoes a network record. tapLeft says that a tap of the
// guest could not be deleted: its firewall then stays, because the guest's
// kernel can make its tap outlive it (TUNSETPERSIST) and the tap must not
// be left unfenced.
func undoNetwork(ctx context.Context, hn HostNetwork, r record, tapLeft *bool) error {
	switch {
	case r.Tap != nil && r.Tap.Index != 0:
		if err := hn.DeleteTap(r.Tap.Name, r.Tap.Index); err != nil {
			*tapLeft = true
			return fmt.Errorf("deleting the tap %s: %w", r.Tap.Name, err)
		}
	case r.Firewall != "" && *tapLeft:
		return fmt.Errorf("kept the firewall of %s, because its tap is still there; delete the tap (ip link delete) and run uml-supervisor cleanup %s", r.Firewall, r.Firewall)
	case r.Firewall != "":
		if err := hn.Teardown(ctx, r.Firewall); err != nil {
			return fmt.Errorf("removing the firewall of %s: %w", r.Firewall, err)
		}
	}
	return nil
}

// tcpProbe says when the guest accepts connections on the Ready=tcp: port
// of its first address: it closes ready then, and until then keeps the
// last error for the timeout's message.
type tcpProbe struct {
	ready chan struct{}
	mu    sync.Mutex
	err   error
}

func probeTCP(ctx context.Context, g *config.Guest) *tcpProbe {
	pr := &tcpProbe{ready: make(chan struct{})}
	addr := net.JoinHostPort(g.Network.Addresses[0].Addr().String(), strconv.Itoa(int(g.Ready.Port)))
	go func() {
		d := net.Dialer{Timeout: time.Second}
		for {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
				close(pr.ready)
				return
			}
			pr.mu.Lock()
			pr.err = err
			pr.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return pr
}

func (pr *tcpProbe) lastErr() error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.err
}

func (s *Supervisor) net() HostNetwork {
	if s.Net == nil {
		return DefaultHostNetwork()
	}
	return s.Net
}

func (s *Supervisor) lookup() netprep.Lookup {
	if s.Lookup == nil {
		return lookupHost
	}
	return s.Lookup
}
