// Command rawlistener is the footprint benchmark's baseline: the least a Go
// process can be while doing a listener's messaging job. It connects to NATS
// with an NKey seed, subscribes to a host's three subjects and answers each
// request with a fixed reply, with nothing else linked in (no CLI, metrics,
// logging or validation).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("nats-url", "", "NATS server URL")
	seed := flag.String("nkey-file", "", "NKey seed file")
	host := flag.String("hostname", "", "hostname")
	flag.Parse()
	opt, err := nats.NkeyOptionFromSeed(*seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nc, err := nats.Connect(*url, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reply := []byte(`{"hostname":"` + *host + `","status":"completed"}`)
	for _, s := range []string{"deploy.test." + *host, "deploy.test.all", "deploy.discover"} {
		if _, err := nc.Subscribe(s, func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	_ = nc.Drain()
}
