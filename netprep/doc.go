// Package netprep puts a guest on its bridge and fences it: the guest's tap
// (opened by the supervisor and handed to the kernel as a descriptor), and
// its firewall: anti-spoofing and the [Firewall] policy, in iptables,
// ip6tables and ebtables.
//
// Everything a guest owns on the host is named after it: chains uml-NAME-*
// and the rules in built-in chains that jump to them. Teardown finds them by
// name alone, so it works after any crash and whatever the configuration
// says now, and never touches anything else.
//
// The rules are computed by a pure function of the configuration (Rules),
// so they can be read, reviewed and golden-tested as text. Firewall applies
// and removes them as iptables-restore input, one transaction per table,
// through a small interface that the tools and a test fake implement, and
// reads their counters with go-iptables.
package netprep
