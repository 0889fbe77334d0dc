// Command agents-worker runs the activities of examples/agent-team.hcl: it
// polls the "agents" queue of a Lockstep cluster until interrupted.
//
//	go run ./examples/workers/agents/cmd/agents-worker [-address http://127.0.0.1:7700]
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"

	"github.com/lockstep-io/lockstep/api"
	"github.com/lockstep-io/lockstep/examples/workers/agents"
	"github.com/lockstep-io/lockstep/worker"
)

func main() {
	addr := flag.String("address", "", "a Lockstep node (default $LOCKSTEP_ADDR or http://127.0.0.1:7700)")
	flag.Parse()
	client, err := api.New(api.Config{Address: *addr})
	if err != nil {
		log.Fatal(err)
	}
	pool, err := worker.NewPool(worker.Config{Client: client, Name: "agents", Queues: []string{"agents"}, Concurrency: 3, Activities: agents.Activities()})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log.Printf("agents worker polling %s", client.Address())
	pool.Run(ctx)
}
