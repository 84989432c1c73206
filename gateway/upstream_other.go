//go:build !unix

package gateway

import "net"

// connAlive cannot peek here: a stale connection is found when used, and
// the request sent again when that is safe.
func connAlive(net.Conn) bool { return true }

// offerSocket offers nothing here: the request is written and its answer
// read the usual way.
func (c *upstreamConn) offerSocket() {}

func (c *upstreamConn) sendThenAwait([]byte) int { return 0 }
