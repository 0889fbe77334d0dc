package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	hhcl "github.com/hashicorp/hcl/v2"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/hcl"
)

// clientFlags are shared by every client command.
type clientFlags struct {
	address string
	json    bool
	name    string // the command, for error messages
	stderr  io.Writer
}

func newFlagSet(name, usage string, stderr io.Writer) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := &clientFlags{name: name, stderr: stderr}
	fs.StringVar(&cf.address, "address", "", "address of any node (default $LOCKSTEP_ADDR or "+api.DefaultAddr+")")
	fs.BoolVar(&cf.json, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs, cf
}

func (cf *clientFlags) client() (*api.Client, error) { return api.New(api.Config{Address: cf.address}) }

// run is the shape of every client command: parse the flags, check that
// there are nargs positional arguments (any number when nargs < 0), connect,
// and call fn with a context that Ctrl-C cancels. An error from fn is
// printed as "lockstep NAME: ..." and exits 1.
func (cf *clientFlags) run(fs *flag.FlagSet, args []string, nargs int, fn func(c context.Context, cl *api.Client) error) int {
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if nargs >= 0 && fs.NArg() != nargs {
		fs.Usage()
		return 1
	}
	cl, err := cf.client()
	if err != nil {
		return fail(cf.stderr, cf.name, err)
	}
	c, cancel := ctx()
	defer cancel()
	if err := fn(c, cl); err != nil {
		return fail(cf.stderr, cf.name, err)
	}
	return 0
}

// parse handles -h (exit 0) and bad flags (exit 1); ok is false when the
// command should return code.
//
// Flags may come before or after positional arguments
// (`lockstep instance start order -input '{}'`), as in Nomad and Consul.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0, false
			}
			return 1, false
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	_ = fs.Parse(append([]string{"--"}, positional...))
	return 0, true
}

func ctx() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func fail(stderr io.Writer, cmd string, err error) int {
	var apiErr *api.Error
	if errors.As(err, &apiErr) && len(apiErr.Diagnostics) > 0 {
		fmt.Fprintf(stderr, "lockstep %s: %s\n", cmd, apiErr.Message)
		return 1
	}
	fmt.Fprintf(stderr, "lockstep %s: %v\n", cmd, err)
	return 1
}

func runWorkflow(args []string, stdout, stderr io.Writer) int {
	return subcommands("workflow", map[string]command{
		"register": {"Register workflow files (unchanged source keeps its version)", workflowRegister},
		"validate": {"Check workflow files locally; exit 1 with diagnostics", workflowValidate},
		"list":     {"List registered workflows", workflowList},
		"fmt":      {"Rewrite workflow files in canonical layout", workflowFmt},
		"graph":    {"Print a workflow's step graph (Graphviz DOT or Mermaid)", workflowGraph},
	}, args, stdout, stderr)
}

// checkFile validates a file locally so errors show file:line:col with a
// snippet before anything is sent.
func checkFile(path string, stderr io.Writer) ([]byte, bool) {
	src, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return nil, false
	}
	if _, diags := hcl.Parse(path, src); diags.HasErrors() {
		fmt.Fprint(stderr, hcl.RenderDiagnostics(diags, src))
		return src, false
	}
	return src, true
}

func workflowRegister(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("workflow register", "workflow register [-address ADDR] FILE...", stderr)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 1
	}
	cl, err := cf.client()
	if err != nil {
		return fail(stderr, "workflow register", err)
	}
	c, cancel := ctx()
	defer cancel()
	code := 0
	var results []*api.Registration
	for _, path := range fs.Args() {
		src, ok := checkFile(path, stderr)
		if !ok {
			code = 1
			continue
		}
		reg, err := cl.RegisterWorkflow(c, path, src)
		if err != nil {
			code = fail(stderr, "workflow register", fmt.Errorf("%s: %w", path, err))
			continue
		}
		results = append(results, reg)
		if !cf.json {
			state := "registered"
			if !reg.Created {
				state = "unchanged"
			}
			fmt.Fprintf(stdout, "%s: workflow %q version %d (%s)\n", path, reg.Name, reg.Version, state)
		}
	}
	if cf.json {
		printJSON(stdout, results)
	}
	return code
}

func workflowValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("workflow validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print diagnostics as JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep workflow validate [-json] FILE...\n\nChecks workflow files without a server. A child workflow step is checked\nagainst the child's declared input when the child is among the files given.\nExit 0 when clean, 1 with diagnostics.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 1
	}
	code := 0
	all := []hcl.Diagnostic{}
	type file struct {
		path  string
		src   []byte
		wf    *hcl.Workflow
		diags hhcl.Diagnostics
	}
	var files []*file
	byName := map[string]*hcl.Workflow{}
	for _, path := range fs.Args() {
		src, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			code = 1
			continue
		}
		f := &file{path: path, src: src}
		f.wf, f.diags = hcl.Parse(path, src)
		if f.wf != nil {
			byName[f.wf.Name] = f.wf
		}
		files = append(files, f)
	}
	// A child workflow step is checked against the child's declared input
	// when the child is one of the files given.
	lookup := func(name string, _ uint64) *hcl.Workflow { return byName[name] }
	for _, f := range files {
		if f.wf != nil {
			if d := hcl.CheckChildInputs(f.wf, lookup); d.HasErrors() {
				f.diags = append(f.diags, d...)
				f.wf = nil
			}
		}
		if f.diags.HasErrors() {
			code = 1
		}
		if *asJSON {
			all = append(all, hcl.DiagnosticsJSON(f.diags)...)
			continue
		}
		if len(f.diags) > 0 {
			fmt.Fprint(stderr, hcl.RenderDiagnostics(f.diags, f.src))
		}
		if f.wf != nil {
			fmt.Fprintf(stdout, "%s: workflow %q is valid (%d steps)\n", f.path, f.wf.Name, len(f.wf.Steps))
		}
	}
	if *asJSON {
		printJSON(stdout, map[string]any{"valid": code == 0, "diagnostics": all})
	}
	return code
}

func workflowList(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("workflow list", "workflow list [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		wfs, err := cl.Workflows(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, wfs)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tREGISTERED\tLABELS\tDESCRIPTION")
		for _, w := range wfs {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", w.Name, w.Version, w.CreatedAt.Local().Format(time.DateTime), formatLabels(w.Labels), w.Description)
		}
		tw.Flush()
		return nil
	})
}

func runInstance(args []string, stdout, stderr io.Writer) int {
	return subcommands("instance", map[string]command{
		"start":     {"Start an instance of a workflow", instanceStart},
		"status":    {"Show an instance and its steps", instanceStatus},
		"list":      {"List instances", instanceList},
		"terminate": {"End an instance at once, without compensation", instanceTerminate},
		"cancel":    {"Cancel an instance: stop it, then undo its succeeded steps", instanceCancel},
		"suspend":   {"Pause an instance: nothing dispatched, no timer takes effect", instanceSuspend},
		"resume":    {"Continue a suspended instance", instanceResume},
		"retry":     {"Run a failed instance (or one step and what follows) again", instanceRetry},
		"step":      {"Decide a step by hand: complete, skip, fail or rerun", instanceStep},
		"signal":    {"Send a signal to an instance", instanceSignal},
		"history":   {"Show everything that happened to an instance, in order", instanceHistory},
		"watch":     {"Follow an instance live until it ends", instanceWatch},
		"steps":     {"Show one step of an instance: its state and every attempt", instanceSteps},
		"replay":    {"Re-derive an instance from its history (against another version with -version)", instanceReplay},
	}, args, stdout, stderr)
}

// readInput takes JSON inline or, with a leading @, from a file.
func readInput(v string) (json.RawMessage, error) {
	if v == "" {
		return nil, nil
	}
	data := []byte(v)
	if strings.HasPrefix(v, "@") {
		var err error
		if data, err = os.ReadFile(v[1:]); err != nil {
			return nil, err
		}
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("-input is not valid JSON: %s", bytes.TrimSpace(data))
	}
	return data, nil
}

func instanceStart(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance start", "instance start [-input JSON|@FILE] [-id ID] [-version N] [-wait] WORKFLOW", stderr)
	input := fs.String("input", "", "instance input as JSON, or @file to read it from a file")
	id := fs.String("id", "", "instance id (business key); repeating a start with the same id is safe")
	version := fs.Uint64("version", 0, "workflow version (default: latest)")
	wait := fs.Bool("wait", false, "wait until the instance ends and print it")
	idemKey := fs.String("idempotency-key", "", "makes retrying this start safe, even without -id: a repeat gets the first answer")
	code := 0
	if rc := cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		in, err := readInput(*input)
		if err != nil {
			return err
		}
		if *idemKey != "" {
			c = api.WithIdempotencyKey(c, *idemKey)
		}
		req := api.StartRequest{Input: in, ID: *id, Version: *version}
		if !*wait {
			s, err := cl.StartInstance(c, fs.Arg(0), req)
			if err != nil {
				return err
			}
			if cf.json {
				printJSON(stdout, s)
			} else {
				fmt.Fprintf(stdout, "%s\n", s.ID)
			}
			return nil
		}
		// One request that waits for the end; blocking reads after it
		// for instances that run longer than its wait.
		_, inst, err := cl.RunInstance(c, fs.Arg(0), req)
		if err != nil {
			return err
		}
		printInstance(stdout, inst, cf.json)
		if inst.Status != "completed" {
			code = 2
		}
		return nil
	}); rc != 0 {
		return rc
	}
	return code
}

func instanceStatus(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance status", "instance status [-address ADDR] [-json] ID", stderr)
	return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		inst, err := cl.Instance(c, fs.Arg(0))
		if err != nil {
			return err
		}
		printInstance(stdout, inst, cf.json)
		return nil
	})
}

func printInstance(w io.Writer, inst *api.Instance, asJSON bool) {
	if asJSON {
		printJSON(w, inst)
		return
	}
	fmt.Fprintf(w, "ID:        %s\nWorkflow:  %s (version %d)\nStatus:    %s\nStarted:   %s\n", inst.ID, inst.Workflow, inst.Version, inst.Status, inst.CreatedAt.Local().Format(time.DateTime))
	if inst.EndedAt != nil {
		fmt.Fprintf(w, "Ended:     %s (%s)\n", inst.EndedAt.Local().Format(time.DateTime), inst.EndedAt.Sub(inst.CreatedAt).Round(time.Millisecond))
	}
	if inst.Error != nil {
		fmt.Fprintf(w, "Error:     %s: %s\n", inst.Error.Type, inst.Error.Message)
	}
	if len(inst.Output) > 0 {
		fmt.Fprintf(w, "Output:    %s\n", inst.Output)
	}
	fmt.Fprintln(w, "\nSteps:")
	names := make([]string, 0, len(inst.Steps))
	for n := range inst.Steps {
		names = append(names, n)
	}
	sortStrings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tSTATUS\tATTEMPTS\tOUTPUT / ERROR")
	for _, n := range names {
		st := inst.Steps[n]
		detail := string(st.Output)
		if st.Error != nil {
			detail = st.Error.Type + ": " + st.Error.Message
		}
		if len(detail) > 80 {
			detail = detail[:77] + "..."
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", n, st.Status, st.Attempts, detail)
	}
	tw.Flush()
}

func instanceList(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance list", "instance list [-workflow NAME] [-page-size N] [-next-token T]", stderr)
	wf := fs.String("workflow", "", "only instances of this workflow")
	size := fs.Int("page-size", 50, "instances per page")
	next := fs.String("next-token", "", "continue a listing from this token")
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		insts, token, err := cl.Instances(c, *wf, *next, *size)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, map[string]any{"instances": insts, "next_token": token})
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tWORKFLOW\tVERSION\tSTATUS\tSTARTED")
		for _, i := range insts {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", i.ID, i.Workflow, i.Version, i.Status, i.CreatedAt.Local().Format(time.DateTime))
		}
		tw.Flush()
		if token != "" {
			fmt.Fprintf(stdout, "\nMore: lockstep instance list -next-token %s\n", token)
		}
		return nil
	})
}

func runMembers(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("members", "members [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		ms, err := cl.Members(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, ms)
			return nil
		}
		leader, _ := cl.Leader(c)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tGOSSIP\tHTTP\tSTATUS\tLEADER")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", m.Name, m.Addr, m.HTTPAddr, m.Status, leader != nil && leader.Node == m.Name)
		}
		tw.Flush()
		return nil
	})
}

func runPeers(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("peers", "peers [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		ps, err := cl.Peers(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, ps)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tADDRESS\tSUFFRAGE\tLEADER")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", p.ID, p.Address, p.Suffrage, p.Leader)
		}
		tw.Flush()
		return nil
	})
}

func runLeader(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("leader", "leader [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		l, err := cl.Leader(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, l)
		} else {
			fmt.Fprintf(stdout, "%s (http://%s)\n", l.Node, l.HTTPAddr)
		}
		return nil
	})
}

func formatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sortStrings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func instanceSuspend(args []string, stdout, stderr io.Writer) int {
	return endInstance("suspend", "instance suspend [-reason TEXT] ID", args, stdout, stderr)
}

func instanceResume(args []string, stdout, stderr io.Writer) int {
	return endInstance("resume", "instance resume [-reason TEXT] ID", args, stdout, stderr)
}

func instanceCancel(args []string, stdout, stderr io.Writer) int {
	return endInstance("cancel", "instance cancel [-reason TEXT] [-wait] ID", args, stdout, stderr)
}

func instanceTerminate(args []string, stdout, stderr io.Writer) int {
	return endInstance("terminate", "instance terminate [-reason TEXT] ID", args, stdout, stderr)
}

// endInstance runs an operator action on an instance: cancel, terminate,
// suspend or resume.
func endInstance(verb, usage string, args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance "+verb, usage, stderr)
	reason := fs.String("reason", "", "why, recorded as the instance's error")
	wait := fs.Bool("wait", false, "wait until the instance has ended and print it")
	return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		call := map[string]func(context.Context, string, string) (string, error){
			"cancel": cl.Cancel, "terminate": cl.Terminate, "suspend": cl.Suspend, "resume": cl.Resume,
		}[verb]
		status, err := call(c, fs.Arg(0), *reason)
		if err != nil {
			return err
		}
		if *wait {
			inst, err := cl.WaitInstance(c, fs.Arg(0))
			if err != nil {
				return err
			}
			printInstance(stdout, inst, cf.json)
			return nil
		}
		if cf.json {
			printJSON(stdout, map[string]string{"id": fs.Arg(0), "status": status})
		} else {
			fmt.Fprintf(stdout, "%s %s\n", fs.Arg(0), status)
		}
		return nil
	})
}

func instanceSignal(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance signal", "instance signal [-payload JSON|@FILE] [-request-id ID] INSTANCE SIGNAL", stderr)
	payload := fs.String("payload", "", "signal payload as JSON, or @file")
	requestID := fs.String("request-id", "", "makes retries of this send safe: a repeat is accepted once")
	return cf.run(fs, args, 2, func(c context.Context, cl *api.Client) error {
		body, err := readInput(*payload)
		if err != nil {
			return err
		}
		res, err := cl.Signal(c, fs.Arg(0), fs.Arg(1), body, *requestID)
		if err != nil {
			return err
		}
		switch {
		case cf.json:
			printJSON(stdout, res)
		case res.Duplicate:
			fmt.Fprintf(stdout, "already received as %s\n", res.SignalID)
		case res.DeliveredTo != "":
			fmt.Fprintf(stdout, "delivered to step %s\n", res.DeliveredTo)
		default:
			fmt.Fprintln(stdout, "buffered: no step waits for it yet")
		}
		return nil
	})
}

func instanceHistory(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance history", "instance history [-after SEQ] ID", stderr)
	after := fs.Uint64("after", 0, "only events after this sequence number")
	return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		var all []api.Event
		for {
			page, err := cl.History(c, fs.Arg(0), *after)
			if err != nil {
				return err
			}
			all = append(all, page...)
			if len(page) < 1000 {
				break
			}
			*after = page[len(page)-1].Seq
		}
		if cf.json {
			printJSON(stdout, all)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tSTEP\tDETAIL")
		printEvents(tw, all)
		tw.Flush()
		return nil
	})
}

// printEvents writes history events as table rows.
func printEvents(tw *tabwriter.Writer, events []api.Event) {
	for _, e := range events {
		fmt.Fprintln(tw, eventRow(e))
	}
}

// eventRow is one event as tab-separated columns: SEQ TIME EVENT STEP DETAIL.
func eventRow(e api.Event) string {
	step := e.Step
	if e.Element != "" {
		step += "[" + e.Element + "]"
	}
	var detail []string
	if e.Attempt > 0 {
		detail = append(detail, fmt.Sprintf("attempt %d", e.Attempt))
	}
	if e.Worker != "" {
		detail = append(detail, "worker "+e.Worker)
	}
	if e.Error != nil {
		detail = append(detail, e.Error.Type+": "+e.Error.Message)
	}
	if e.Detail != "" {
		detail = append(detail, e.Detail)
	}
	if len(e.Data) > 0 && e.Type != "instance_started" {
		detail = append(detail, string(e.Data))
	}
	text := strings.Join(detail, ", ")
	if len(text) > 100 {
		text = text[:97] + "..."
	}
	return fmt.Sprintf("%d\t%s\t%s\t%s\t%s", e.Seq, e.Time.Local().Format("15:04:05.000"), e.Type, step, text)
}

var endEvents = map[string]bool{"instance_completed": true, "instance_failed": true, "instance_cancelled": true,
	"instance_terminated": true, "instance_timed_out": true}

func instanceWatch(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance watch", "instance watch ID", stderr)
	return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		var after uint64
		index := "0"
		for {
			events, next, err := cl.HistoryAfter(c, fs.Arg(0), after, index, 30*time.Second)
			if err != nil {
				if c.Err() != nil {
					return nil
				}
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			printEvents(tw, events)
			tw.Flush()
			for _, e := range events {
				after = e.Seq
				if endEvents[e.Type] {
					return nil
				}
			}
			index = next
		}
	})
}

func instanceSteps(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance steps", "instance steps ID STEP", stderr)
	return cf.run(fs, args, 2, func(c context.Context, cl *api.Client) error {
		d, err := cl.Step(c, fs.Arg(0), fs.Arg(1))
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, d)
			return nil
		}
		fmt.Fprintf(stdout, "Step:      %s\nStatus:    %s\nAttempts:  %d\n", d.Step, d.State.Status, d.State.Attempts)
		if len(d.State.Output) > 0 {
			fmt.Fprintf(stdout, "Output:    %s\n", d.State.Output)
		}
		if d.State.Error != nil {
			fmt.Fprintf(stdout, "Error:     %s: %s\n", d.State.Error.Type, d.State.Error.Message)
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tSTEP\tDETAIL")
		printEvents(tw, d.Events)
		tw.Flush()
		return nil
	})
}

func instanceReplay(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance replay", "instance replay [-version N] ID\n\nRe-derives the instance from its history on the node answering and compares\nthe result with its stored state. With -version N it replays against that\nversion of the workflow and names the first step where it would decide\ndifferently. Exit 0 when it matches, 2 when it diverges", stderr)
	version := fs.Uint64("version", 0, "workflow version to replay against (default: the instance's)")
	code := 0
	rc := cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		rep, err := cl.Replay(c, fs.Arg(0), *version)
		if err != nil {
			return err
		}
		if !rep.Matches {
			code = 2
		}
		if cf.json {
			printJSON(stdout, rep)
			return nil
		}
		fmt.Fprintf(stdout, "Instance:  %s (%s version %d)\nReplayed:  version %d, %d of %d events\n", rep.InstanceID, rep.Workflow, rep.Version, rep.ReplayedVersion, rep.ReplayedEvents, rep.Events)
		if rep.Matches {
			fmt.Fprintf(stdout, "Result:    matches (%s)\n", rep.Status)
			return nil
		}
		d := rep.Divergence
		fmt.Fprintf(stdout, "Result:    diverges at event %d", d.Seq)
		if d.Step != "" {
			fmt.Fprintf(stdout, ", step %q", d.Step)
		}
		fmt.Fprintf(stdout, "\n           %s\n", d.Reason)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\n\tSEQ\tTIME\tEVENT\tSTEP\tDETAIL")
		for _, x := range []struct {
			label string
			e     *api.Event
		}{{"original", d.Original}, {"replayed", d.Replayed}} {
			if x.e == nil {
				fmt.Fprintf(tw, "%s\t-\t\t(none)\t\t\n", x.label)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\n", x.label, eventRow(*x.e))
		}
		tw.Flush()
		return nil
	})
	if rc != 0 {
		return rc
	}
	return code
}

func instanceRetry(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance retry", "instance retry [-step NAME] [-reason TEXT] ID", stderr)
	step := fs.String("step", "", "run this step and everything after it again (default: every step that did not succeed)")
	reason := fs.String("reason", "", "why, recorded in the history")
	return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
		status, err := cl.Retry(c, fs.Arg(0), *step, *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", fs.Arg(0), status)
		return nil
	})
}

func instanceStep(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("instance step", "instance step [-output JSON|@FILE] [-error TYPE] [-reason TEXT] ID STEP complete|skip|fail|rerun", stderr)
	output := fs.String("output", "", "the step's output, for complete")
	errType := fs.String("error", "", "the error type, for fail (default failed_by_operator)")
	reason := fs.String("reason", "", "why, recorded in the history (and the error message, for fail)")
	return cf.run(fs, args, 3, func(c context.Context, cl *api.Client) error {
		out, err := readInput(*output)
		if err != nil {
			return err
		}
		var te *api.TaskError
		if *errType != "" {
			te = &api.TaskError{Type: *errType, Message: *reason}
		}
		status, err := cl.OverrideStep(c, fs.Arg(0), fs.Arg(1), fs.Arg(2), out, te, *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", fs.Arg(0), status)
		return nil
	})
}

func runService(args []string, stdout, stderr io.Writer) int {
	return subcommands("service", map[string]command{
		"list":    {"List services and their breakers", serviceList},
		"breaker": {"Reset (closed) or trip (open) a service's breaker", serviceBreaker},
	}, args, stdout, stderr)
}

func serviceList(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("service list", "service list [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		bs, err := cl.Services(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, bs)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tBREAKER\tRECENT FAILURES\tTRIPS AT\tBASE URL")
		for _, b := range bs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", b.Name, b.State, len(b.Recent), b.Failures, b.BaseURL)
		}
		tw.Flush()
		return nil
	})
}

func serviceBreaker(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("service breaker", "service breaker NAME closed|open", stderr)
	return cf.run(fs, args, 2, func(c context.Context, cl *api.Client) error {
		b, err := cl.SetBreaker(c, fs.Arg(0), fs.Arg(1))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", b.Name, b.State)
		return nil
	})
}

func runTrigger(args []string, stdout, stderr io.Writer) int {
	action := func(verb string) command {
		return command{verb + " a trigger", func(args []string, stdout, stderr io.Writer) int {
			fs, cf := newFlagSet("trigger "+verb, "trigger "+verb+" WORKFLOW.TRIGGER", stderr)
			return cf.run(fs, args, 1, func(c context.Context, cl *api.Client) error {
				out, err := cl.TriggerAction(c, fs.Arg(0), verb)
				if err != nil {
					return err
				}
				printJSON(stdout, out)
				return nil
			})
		}}
	}
	return subcommands("trigger", map[string]command{
		"list":    {"List cron triggers", triggerList},
		"enable":  action("enable"),
		"disable": action("disable"),
		"fire":    action("fire"),
	}, args, stdout, stderr)
}

func triggerList(args []string, stdout, stderr io.Writer) int {
	fs, cf := newFlagSet("trigger list", "trigger list [-address ADDR] [-json]", stderr)
	return cf.run(fs, args, -1, func(c context.Context, cl *api.Client) error {
		ts, err := cl.Triggers(c)
		if err != nil {
			return err
		}
		if cf.json {
			printJSON(stdout, ts)
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TRIGGER\tSCHEDULE\tZONE\tENABLED\tOVERLAP\tLAST FIRE\tFIRED\tSKIPPED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%d\t%d\n", t.ID, t.Schedule, t.Timezone, t.Enabled, t.Overlap, t.LastFire.Local().Format(time.DateTime), t.Fired, t.Skipped)
		}
		tw.Flush()
		return nil
	})
}
