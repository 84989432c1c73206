//go:build !linux

package gateway

import (
	"errors"
	"net"

	"github.com/hashicorp/go-hclog"

	"github.com/hopgate/hopgate/gateway/h1"
)

// loopServer stands for the event loops (loops.go), which run on Linux
// only: elsewhere the public server keeps a goroutine per connection.
type loopServer struct{ httpServer }

func (*loopServer) serve() error { return nil }

func newLoopServer(*Proxy, *h1.Server, ServerSettings, net.Listener, int, hclog.Logger) (*loopServer, error) {
	return nil, errors.New("event loops run on Linux only")
}
