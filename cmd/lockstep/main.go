// Command lockstep is the one Lockstep binary: `lockstep agent` runs a node,
// every other subcommand is a client of the HTTP API.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	synopsis string
	run      func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"agent":    {"Run a Lockstep node (server, API and built-in workers)", runAgent},
	"workflow": {"Register, validate and list workflows", runWorkflow},
	"instance": {"Start instances and read their status", runInstance},
	"members":  {"List the cluster's gossip members", runMembers},
	"leader":   {"Print the current leader (exit 1 when none is known)", runLeader},
	"service":  {"Show services' circuit breakers; reset or trip one", runService},
	"trigger":  {"List cron triggers; enable, disable or fire one", runTrigger},
	"peers":    {"List the raft servers and which one leads", runPeers},
	"bench":    {"Run a workload against a cluster; report throughput and latency", runBench},
	"version":  {"Print the version", func([]string, io.Writer, io.Writer) int { fmt.Println("lockstep", version); return 0 }},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: lockstep <command> [args]\n\nLockstep is a clustered workflow orchestration engine.\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "    %-10s %s\n", n, commands[n].synopsis)
	}
	fmt.Fprintf(w, "\nClient commands talk to $LOCKSTEP_ADDR (default http://127.0.0.1:7700) or -address.\nRun 'lockstep <command> -h' for a command's flags.\n")
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	if args[0] == "-v" || args[0] == "--version" {
		args[0] = "version"
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "lockstep: unknown command %q\n\n", args[0])
		usage(stderr)
		return 1
	}
	return cmd.run(args[1:], stdout, stderr)
}

// subcommands dispatches "lockstep X <sub>".
func subcommands(name string, subs map[string]command, args []string, stdout, stderr io.Writer) int {
	help := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: lockstep %s <subcommand> [args]\n\nSubcommands:\n", name)
		keys := make([]string, 0, len(subs))
		for k := range subs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "    %-10s %s\n", k, subs[k].synopsis)
		}
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		help(stdout)
		return 0
	}
	sub, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "lockstep %s: unknown subcommand %q (one of: %s)\n", name, args[0], strings.Join(sortedKeys(subs), ", "))
		return 1
	}
	return sub.run(args[1:], stdout, stderr)
}

func sortedKeys(m map[string]command) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortStrings(s []string) { sort.Strings(s) }
