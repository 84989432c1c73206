//go:build linux

package gateway

// The event-loop data path.
//
// With a goroutine per connection, every proxied request parks and wakes
// goroutines twice (the client's waits for the instance's answer, then
// for the next request), and the runtime's monitor thread wakes every
// 20 µs to take processors back from threads long in loopback writes. On
// a busy gateway that costs more CPU than the gateway's own work. Here
// the public connections, and the upstream connections they use, live on
// epoll event loops instead (gnet, one loop per CPU): a request is read,
// routed, sent, answered and relayed by callbacks on the loop of its
// client's connection, with no goroutine and no hand-off.
//
// The loops serve the common request only, and only to its common end:
//   - they take a head of the common shape without a body
//     (h1.ParseBodiless), of a safe method but HEAD, on a route served
//     over HTTP/1.1. The first request of any other kind moves its
//     connection, its input unread, to gateway/h1's server for the rest of
//     its life, where it is served as every connection is without loops.
//   - they relay an answer of the common shape (h1.ParseAnswer), not a
//     502, 503 or 504, of at most loopMaxAnswer bytes. Any other end (an
//     answer of another shape, one to retry, a failure, a timeout) moves
//     the client's connection there too, with what the loop did of the
//     request (loopResume): the goroutine path goes on from the loop's
//     attempt, with its spans, by all of its rules.
//
// So the loops add a fast path, never a second set of HTTP rules.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/panjf2000/gnet/v2"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/hopgate/hopgate/gateway/balance"
	"github.com/hopgate/hopgate/gateway/h1"
)

const (
	// loopMaxAnswer bounds the answers a loop relays. A loop cannot stop
	// reading an instance while a slow client takes its answer, so it
	// holds what the client has not taken; a longer answer goes by the
	// goroutine path, which reads only as fast as the client does.
	loopMaxAnswer = 256 << 10
	// loopMaxAnswerHead bounds the answer head a loop waits for; a longer
	// one is the goroutine path's to read (up to maxResponseHead).
	loopMaxAnswerHead = 64 << 10
	// loopTick is how often a loop looks at its requests' deadlines; they
	// pass up to this late while it serves, up to loopIdleTick when idle.
	loopTick     = 10 * time.Millisecond
	loopIdleTick = 50 * time.Millisecond
)

// loopServer serves public connections on event loops, and hands the
// ones it does not serve to fallback. It is the public server's
// httpServer when event loops are on.
type loopServer struct {
	gnet.BuiltinEventEngine
	p         *Proxy
	transport *Transport // p's: its idle timeout and dialer hold here too
	fallback  *h1.Server
	ss        ServerSettings
	ln        net.Listener
	cli       *gnet.Client
	log       hclog.Logger
	maxHead   int
	// sweepEvery is how often a loop looks at its idle connections: a
	// tenth of the shortest timeout they have, within 100ms and 1s.
	sweepEvery time.Duration
	slots      chan struct{} // one per open connection, when capped
	loops      sync.Map      // gnet.EventLoop to its *loopState
	open       atomic.Int64  // client connections on the loops
	closing    atomic.Bool
	stopTick   chan struct{}
	stopOnce   sync.Once
}

// loopState is one event loop's own: only the loop's goroutine touches it.
type loopState struct {
	el      gnet.EventLoop
	idle    map[string][]gnet.Conn // kept-alive upstream connections, by address, oldest first
	scratch []byte                 // where heads are formatted
	waiting []*loopExchange        // sent, their answer's head not yet in: deadlines to watch
	clients map[*loopClient]struct{}
	blocked []*loopClient // a request waiting for the answer before it to leave
	swept   time.Time     // when it last looked at its idle connections
	ticked  atomic.Int64  // when it last ticked, in Unix nanoseconds
}

// unwait drops lx from the requests whose deadline the loop watches.
func (l *loopState) unwait(lx *loopExchange) {
	l.waiting = slices.DeleteFunc(l.waiting, func(w *loopExchange) bool { return w == lx })
}

// guard keeps a connection from being closed under its own callback:
// busy while the callback runs, doomed when something closed it then, so
// the callback's Close action does. gnet closes a connection by its fd,
// which a connection closed twice may share with a newer one.
type guard struct{ busy, doomed bool }

// loopClient is a public connection's state.
type loopClient struct {
	loop       *loopState
	conn       gnet.Conn
	remote     string
	requests   int64
	cur        *loopExchange // the request being served
	spare      *loopExchange // the last one served, for the next to reuse
	headSince  time.Time     // when the head being read began; zero when none is
	idleSince  time.Time     // when the last answer ended
	handedOver bool          // to the fallback server
	closed     bool
	guard
}

// loopUpstream is an upstream connection's state.
type loopUpstream struct {
	loop      *loopState
	addr      string
	conn      gnet.Conn // nil until it is on the loop
	cur       *loopExchange
	pending   []byte // the head to send once connected
	reused    bool   // taken from the idle pool for cur
	idleSince time.Time
	guard
}

// loopExchange is one request served on a loop.
type loopExchange struct {
	ex         exchange
	req        http.Request
	cs         *loopClient
	up         *loopUpstream
	headLen    int // of the request, left in the client's input until the end
	closeAfter bool
	relay      h1.AnswerHead
	resp       http.Response // the answer's head, parsed
	answered   bool
	upCloses   bool  // the instance closes its connection after the answer
	left       int64 // body bytes still to relay
	attemptAt  time.Time
	headAt     time.Time
	deadline   time.Time
	timeout    time.Duration   // the one that deadline is
	ctx        context.Context // the attempt's, with its span
	span       trace.Span      // the attempt's
}

// newLoopServer starts the event loops for p; serve then puts ln's
// connections on them.
func newLoopServer(p *Proxy, fallback *h1.Server, ss ServerSettings, ln net.Listener, maxConns int, log hclog.Logger) (*loopServer, error) {
	t, ok := p.transport.(*Transport)
	if !ok {
		return nil, errors.New("event loops need the gateway's own transport")
	}
	s := &loopServer{p: p, transport: t, fallback: fallback, ss: ss, ln: ln, log: log,
		maxHead: fallback.MaxHeadBytes(), stopTick: make(chan struct{})}
	if maxConns > 0 {
		s.slots = make(chan struct{}, maxConns)
	}
	shortest := ss.HeaderTimeout
	if ss.IdleTimeout > 0 {
		shortest = min(shortest, ss.IdleTimeout)
	}
	s.sweepEvery = min(max(shortest/10, 100*time.Millisecond), time.Second)
	// A loop per processor Go runs on (which follows a container's CPU
	// limit), not per CPU the machine has.
	cli, err := gnet.NewClient(s, gnet.WithNumEventLoop(runtime.GOMAXPROCS(0)), gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{log}))
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	s.cli = cli
	go s.ticker()
	return s, nil
}

// serve accepts on the listener and puts every connection on a loop.
func (s *loopServer) serve() error {
	for {
		if s.slots != nil {
			s.slots <- struct{}{}
		}
		c, err := h1.Accept(s.ln, s.log)
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			return err
		}
		if _, err := s.cli.EnrollContext(c, nil); err != nil {
			s.log.Error("taking a connection onto an event loop failed", "error", err)
			s.release()
		}
	}
}

// release gives back a connection's slot.
func (s *loopServer) release() {
	if s.slots != nil {
		<-s.slots
	}
}

// SetKeepAlivesEnabled(false) closes connections after their answer; the
// loops read it from the fallback server, which heeds it too.
func (s *loopServer) SetKeepAlivesEnabled(on bool) { s.fallback.SetKeepAlivesEnabled(on) }

// Shutdown stops accepting, lets the requests being served end, and
// closes every connection as it goes idle, or when ctx ends. The loops
// go first: a request on them may still move to the fallback server,
// which then waits for it.
func (s *loopServer) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.ln.Close()
	s.fallback.SetKeepAlivesEnabled(false) // for the loops too
	var err error
	wait := time.Millisecond
	for err == nil && s.open.Load() > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, 100*time.Millisecond)
	}
	if err == nil {
		err = s.fallback.Shutdown(ctx)
	}
	s.stop()
	return err
}

// Close stops at once.
func (s *loopServer) Close() error {
	s.closing.Store(true)
	s.ln.Close()
	s.fallback.Close()
	s.stop()
	return nil
}

func (s *loopServer) stop() {
	s.stopOnce.Do(func() {
		close(s.stopTick)
		_ = s.cli.Stop()
	})
}

// ticker has every loop that has not ticked lately tick. A busy loop
// ticks at the end of its callbacks (see OnTraffic), at no cost of a
// wake-up: every goroutine woken while the loops hold the processors
// costs a hand-off of one.
func (s *loopServer) ticker() {
	t := time.NewTicker(loopIdleTick)
	defer t.Stop()
	for {
		select {
		case <-s.stopTick:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		s.loops.Range(func(_, v any) bool {
			l := v.(*loopState)
			if now-l.ticked.Load() < int64(loopTick) {
				return true // a busy loop: it ticks as it serves
			}
			_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				s.tick(l, time.Now())
				return nil
			}))
			return true
		})
	}
}

func (s *loopServer) stateOf(c gnet.Conn) *loopState {
	if l, ok := s.loops.Load(c.EventLoop()); ok {
		return l.(*loopState)
	}
	l := &loopState{el: c.EventLoop(), idle: make(map[string][]gnet.Conn), clients: make(map[*loopClient]struct{})}
	s.loops.Store(c.EventLoop(), l)
	return l
}

func (s *loopServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if us, ok := c.Context().(*loopUpstream); ok { // dialled for a request
		us.conn = c
		if us.doomed {
			return nil, gnet.Close
		}
		if us.cur == nil { // the request ended while it was dialled
			us.pending, us.idleSince = nil, time.Now()
			us.loop.idle[us.addr] = append(us.loop.idle[us.addr], c)
			return nil, gnet.None
		}
		out := us.pending
		us.pending = nil
		return out, gnet.None
	}
	s.open.Add(1)
	l := s.stateOf(c)
	cs := &loopClient{loop: l, conn: c, remote: c.RemoteAddr().String(), headSince: time.Now()}
	l.clients[cs] = struct{}{}
	c.SetContext(cs)
	return nil, gnet.None
}

func (s *loopServer) OnClose(c gnet.Conn, err error) gnet.Action {
	switch st := c.Context().(type) {
	case *loopClient:
		st.closed = true
		if st.handedOver { // the slot is the fallback's now
			return gnet.None
		}
		s.forget(st)
		s.release()
		if lx := st.cur; lx != nil {
			st.cur = nil
			s.clientLeft(lx)
		}
	case *loopUpstream:
		st.conn = nil
		l := st.loop
		l.idle[st.addr] = slices.DeleteFunc(l.idle[st.addr], func(u gnet.Conn) bool { return u == c })
		if lx := st.cur; lx != nil {
			st.cur, lx.up = nil, nil
			if lx.answered {
				s.abort(lx) // cut short: the client must see it cut too
			} else {
				s.attemptFailed(lx, st, fmt.Errorf("instance closed the connection: %w", orEOF(err)))
			}
		}
	}
	return gnet.None
}

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// forget drops a client connection that is closed or handed over.
func (s *loopServer) forget(cs *loopClient) {
	delete(cs.loop.clients, cs)
	s.open.Add(-1)
}

// OnTraffic serves what came on a connection. A connection is closed
// here only by the action returned, never under its own callback: what
// the callback does may close the other end of its request, whose
// OnClose then closes this one by dooming it.
func (s *loopServer) OnTraffic(c gnet.Conn) gnet.Action {
	switch st := c.Context().(type) {
	case *loopClient:
		st.busy = true
		return s.endCallback(st.loop, &st.guard, s.request(st))
	case *loopUpstream:
		st.busy = true
		return s.endCallback(st.loop, &st.guard, s.answer(st))
	}
	return gnet.Close
}

// endCallback ends a connection's callback that returned action: the
// loop ticks if it is time, while closes are still deferred, and a
// connection doomed meanwhile is closed.
func (s *loopServer) endCallback(l *loopState, g *guard, action gnet.Action) gnet.Action {
	s.maybeTick(l)
	g.busy = false
	if g.doomed {
		return gnet.Close
	}
	return action
}

// closeClient closes a client connection, when its callback returns if
// it is under it.
func (s *loopServer) closeClient(cs *loopClient) {
	if !cs.closed {
		cs.close(cs.loop.el, cs.conn)
	}
}

// closeUpstream closes an upstream connection, as closeClient does; one
// not on the loop yet is closed as it comes.
func (s *loopServer) closeUpstream(us *loopUpstream) { us.close(us.loop.el, us.conn) }

// close closes c, or dooms it under its callback or when it is nil.
func (g *guard) close(el gnet.EventLoop, c gnet.Conn) {
	if g.busy || c == nil {
		g.doomed = true
		return
	}
	_ = el.Close(c)
}

// request serves the next request in the client's input, unless one is
// being served: it then waits there, as does one that came before the
// answer before it left.
func (s *loopServer) request(cs *loopClient) gnet.Action {
	c := cs.conn
	if cs.cur != nil {
		return gnet.None
	}
	buf, _ := c.Peek(-1)
	if len(buf) == 0 {
		return gnet.None
	}
	n := h1.HeadLen(buf)
	switch {
	case n == 0 && len(buf) < s.maxHead:
		cs.waitHead() // the rest of the head is on its way
		return gnet.None
	case c.OutboundBuffered() > 0:
		// The answer before is still leaving: a request handed over now
		// would lose it, so none starts until it is gone.
		cs.waitHead()
		cs.loop.blocked = append(cs.loop.blocked, cs)
		return gnet.None
	case n == 0 || n > s.maxHead:
		return s.handOver(cs, nil)
	}
	// The last request's exchange and Header map, if it ended on the
	// loop, serve this one.
	lx := cs.spare
	var header http.Header
	if lx == nil {
		lx = new(loopExchange)
	} else {
		cs.spare, header = nil, lx.req.Header
	}
	*lx = loopExchange{cs: cs, headLen: n}
	r := &lx.req
	r.Header = header
	if !h1.ParseBodiless(buf[:n], r) {
		return s.handOver(cs, nil)
	}
	r.RemoteAddr = cs.remote
	l := cs.loop
	head, ok := s.p.beginOnLoop(lx, l.scratch[:0])
	if !ok {
		return s.handOver(cs, nil)
	}
	l.scratch = head[:0]
	cs.requests++
	max := s.p.settings.MaxRequestsPerConn
	lx.closeAfter = r.Close || !s.fallback.KeepAlives() || max > 0 && cs.requests >= int64(max)
	cs.cur, cs.headSince = lx, time.Time{}
	lx.deadline, lx.timeout = attemptDeadline(&lx.ex, lx.attemptAt)
	l.waiting = append(l.waiting, lx)
	s.send(lx, head)
	return gnet.None
}

// waitHead notes when the head now awaited began to come, for the
// header timeout.
func (cs *loopClient) waitHead() {
	if cs.headSince.IsZero() {
		cs.headSince = time.Now()
	}
}

// attemptDeadline is when an attempt begun at start times out, and which
// timeout that is: the route's, or the try's when it ends first.
func attemptDeadline(ex *exchange, start time.Time) (time.Time, time.Duration) {
	pol := ex.route.policy
	if pol.tryTimeout > 0 && pol.tryTimeout < pol.timeout {
		return start.Add(pol.tryTimeout), pol.tryTimeout
	}
	return ex.start.Add(pol.timeout), pol.timeout
}

// send writes a request head to an idle connection to lx's instance, or
// to a new one.
func (s *loopServer) send(lx *loopExchange, head []byte) {
	l := lx.cs.loop
	addr := lx.ep().Addr
	if idle := l.idle[addr]; len(idle) > 0 {
		u := idle[len(idle)-1]
		l.idle[addr] = idle[:len(idle)-1]
		us := u.Context().(*loopUpstream)
		us.cur, us.reused, lx.up = lx, true, us
		_, _ = u.Write(head)
		return
	}
	us := &loopUpstream{loop: l, addr: addr, cur: lx, pending: append([]byte(nil), head...)}
	lx.up = us
	connect := lx.ex.route.policy.connect
	go func() {
		// Dialled off the loop, as the goroutine path dials: within the
		// route's connect timeout, with the transport's dialer.
		ctx := context.Background()
		if connect > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, connect)
			defer cancel()
		}
		nc, err := s.transport.Dial(ctx, "tcp", addr)
		if err == nil {
			var res <-chan gnet.RegisteredResult
			if res, err = l.el.Enroll(gnet.NewContext(context.Background(), us), nc); err == nil {
				if err = (<-res).Err; err == nil {
					return // its OnOpen sent the head, or pooled it
				}
			}
		}
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if lx := us.cur; lx != nil {
				us.cur, lx.up = nil, nil
				s.attemptFailed(lx, nil, err)
			}
			return nil
		}))
	}()
}

// answer relays an instance's answer to its client, or hands the request
// over when the answer is not the loop's to relay.
func (s *loopServer) answer(us *loopUpstream) gnet.Action {
	u := us.conn
	lx := us.cur
	if lx == nil {
		return gnet.Close // an idle connection speaking: it cannot be trusted
	}
	buf, _ := u.Peek(-1)
	c := lx.cs.conn
	if !lx.answered {
		n := h1.HeadLen(buf)
		if n == 0 {
			if len(buf) > loopMaxAnswerHead {
				return s.handOverAnswer(lx, us)
			}
			return gnet.None
		}
		resp := h1.ParseAnswer(buf[:n], &lx.ex.out, &lx.relay, &lx.resp)
		if resp == nil || resp.Header != nil || lx.relay.Length > loopMaxAnswer ||
			classifyStatus(resp.StatusCode) == answered5xx {
			return s.handOverAnswer(lx, us)
		}
		l := lx.cs.loop
		lx.headAt = time.Now()
		// The body then streams for as long as it flows: the deadline is
		// its idle timeout, from every piece, as on the goroutine path.
		if !lx.idleFrom(lx.headAt) {
			l.unwait(lx)
		}
		lx.answered, lx.left, lx.upCloses = true, lx.relay.Length, resp.Close
		// The head and what came of the body go in one write: one
		// segment, where two would cost the kernel a packet more.
		out := h1.AppendRelayHead(l.scratch[:0], &lx.relay, lx.closeAfter)
		m := min(int64(len(buf)-n), lx.left)
		out = append(out, buf[n:n+int(m)]...)
		l.scratch = out[:0]
		lx.left -= m
		// A write that fails closes the client at once, and its OnClose
		// ends the request: nothing of it is left to do here.
		_, _ = c.Write(out)
		_, _ = u.Discard(n + int(m))
		if lx.cs.closed {
			return gnet.Close
		}
	} else if m := min(int64(len(buf)), lx.left); m > 0 {
		_, _ = c.Write(buf[:m])
		_, _ = u.Discard(int(m))
		lx.left -= m
		if lx.cs.closed {
			return gnet.Close
		}
		lx.idleFrom(time.Now())
	}
	if lx.left > 0 {
		return gnet.None
	}
	l := lx.cs.loop
	l.unwait(lx)
	us.cur, lx.up = nil, nil
	s.p.finishOnLoop(lx, lx.relay.Code, true)
	// It closes after this answer, or said more than it: else it is
	// pooled once the client's next request is under way, so that this
	// callback does not write to its own connection.
	keep := !lx.upCloses && u.InboundBuffered() == 0
	headAt := lx.headAt
	s.next(lx) // lx may now be the client's next request
	if !keep || us.doomed {
		return gnet.Close
	}
	us.reused, us.idleSince = false, headAt
	l.idle[us.addr] = append(l.idle[us.addr], u)
	return gnet.None
}

// idleFrom sets the deadline of a body being relayed to the route's idle
// timeout from now, and reports false when the route has none.
func (lx *loopExchange) idleFrom(now time.Time) bool {
	idle := lx.ex.route.policy.idle
	lx.deadline, lx.timeout = now.Add(idle), idle
	return idle > 0
}

// next goes on to the client's next request, or closes its connection.
func (s *loopServer) next(lx *loopExchange) {
	cs := lx.cs
	c := cs.conn
	_, _ = c.Discard(lx.headLen)
	cs.cur, cs.idleSince = nil, time.Now()
	// Ended, and referred to by nothing else: the loop's state was let go
	// of it as it ended. A request that ends any other way is not reused.
	cs.spare = lx
	if lx.closeAfter {
		s.closeClient(cs)
		return
	}
	if c.InboundBuffered() > 0 && s.request(cs) == gnet.Close {
		s.closeClient(cs)
	}
}

// attemptFailed ends the loop's attempt that got no answer: sent again
// on a new connection when a pooled one turned out closed (as the
// goroutine path's transport does), else handed to the goroutine path,
// which retries or answers by its rules.
func (s *loopServer) attemptFailed(lx *loopExchange, us *loopUpstream, err error) {
	l := lx.cs.loop
	if us != nil && us.reused {
		if head, herr := appendRequestHead(l.scratch[:0], &lx.ex.out); herr == nil {
			l.scratch = head[:0]
			s.send(lx, head)
			return
		}
	}
	l.unwait(lx)
	s.handOverClient(lx, nil, err)
}

// clientLeft ends a request whose client left.
func (s *loopServer) clientLeft(lx *loopExchange) {
	l := lx.cs.loop
	l.unwait(lx)
	if us := lx.up; us != nil {
		us.cur, lx.up = nil, nil
		s.closeUpstream(us) // its answer is not wanted
	}
	status := 499 // as the goroutine path logs it
	if lx.answered {
		status = lx.relay.Code
	}
	s.p.finishOnLoop(lx, status, lx.answered)
}

// abort ends a request whose answer was cut short: so is the client's.
func (s *loopServer) abort(lx *loopExchange) {
	l := lx.cs.loop
	l.unwait(lx)
	s.p.finishOnLoop(lx, lx.relay.Code, true)
	lx.cs.cur = nil
	s.closeClient(lx.cs)
}

// maybeTick ticks when loopTick has passed since the loop last did.
func (s *loopServer) maybeTick(l *loopState) {
	if now := time.Now(); now.UnixNano()-l.ticked.Load() >= int64(loopTick) {
		s.tick(l, now)
	}
}

// tick fails the requests whose deadline passed, and every sweepEvery
// closes idle connections.
func (s *loopServer) tick(l *loopState, now time.Time) {
	l.ticked.Store(now.UnixNano())
	var expired []*loopExchange
	for _, lx := range l.waiting {
		if !now.Before(lx.deadline) {
			expired = append(expired, lx)
		}
	}
	for _, lx := range expired {
		if lx.answered { // its body stalled: cut, as on the goroutine path
			if us := lx.up; us != nil {
				us.cur, lx.up = nil, nil
				s.closeUpstream(us)
			}
			s.abort(lx)
			continue
		}
		if us := lx.up; us != nil {
			us.cur, lx.up = nil, nil
			s.closeUpstream(us) // its answer is too late to be wanted
		}
		s.attemptFailed(lx, nil, fmt.Errorf("%w: no answer from %s within %v", errTimeout, lx.ep().Addr, lx.timeout))
	}
	blocked := l.blocked
	l.blocked = nil
	for _, cs := range blocked {
		if !cs.closed && !cs.handedOver && cs.cur == nil && s.request(cs) == gnet.Close {
			s.closeClient(cs)
		}
	}
	if now.Sub(l.swept) < s.sweepEvery && !s.closing.Load() {
		return
	}
	l.swept = now
	keepAlives := s.fallback.KeepAlives()
	for cs := range l.clients {
		switch {
		case cs.cur != nil:
		case !cs.headSince.IsZero():
			if now.Sub(cs.headSince) >= s.ss.HeaderTimeout {
				s.closeClient(cs)
			}
		case !keepAlives || s.ss.IdleTimeout > 0 && now.Sub(cs.idleSince) >= s.ss.IdleTimeout:
			s.closeClient(cs)
		}
	}
	for addr, conns := range l.idle {
		n := 0 // oldest first
		for n < len(conns) && now.Sub(conns[n].Context().(*loopUpstream).idleSince) >= s.transport.IdleTimeout {
			n++
		}
		for _, u := range slices.Clone(conns[:n]) {
			_ = l.el.Close(u)
		}
		if len(l.idle[addr]) == 0 {
			delete(l.idle, addr)
		}
	}
}

// handOver moves a client connection, its input unread, to the fallback
// server, with note for its first request. Called from the connection's
// own OnTraffic, whose Close action closes it here.
func (s *loopServer) handOver(cs *loopClient, note *loopResume) gnet.Action {
	nc, err := detach(cs.conn)
	s.forget(cs)
	cs.handedOver = true
	if err != nil {
		s.log.Error("handing a connection over failed", "error", err)
		s.release()
		return gnet.Close
	}
	nc.release = s.release
	s.fallback.Adopt(nc, h1.Handover{Requests: cs.requests, Note: note})
	return gnet.Close
}

// handOverClient hands lx's client over from outside its callbacks, with
// what the loop did of lx: its attempt's answer unread on up, or its
// failure, err.
func (s *loopServer) handOverClient(lx *loopExchange, up net.Conn, err error) {
	cs := lx.cs
	cs.cur = nil
	lx.ex.route.state.inflight.Add(-1) // the goroutine path counts it again
	note := &loopResume{route: lx.ex.route, start: lx.ex.start, span: lx.ex.span, ep: lx.ep(),
		attemptAt: lx.attemptAt, attemptSpan: lx.span, up: up, err: err}
	s.handOver(cs, note)
	s.closeClient(cs) // its copy on the loop
}

// handOverAnswer hands lx over with its answer unread on us, which leaves
// the loop. Called from us's OnTraffic, whose Close action closes it.
func (s *loopServer) handOverAnswer(lx *loopExchange, us *loopUpstream) gnet.Action {
	us.cur, lx.up = nil, nil
	l := lx.cs.loop
	l.unwait(lx)
	nc, err := detach(us.conn)
	if err != nil {
		s.handOverClient(lx, nil, err)
		return gnet.Close
	}
	s.handOverClient(lx, nc, nil)
	return gnet.Close
}

// detach takes a connection off its loop as a net.Conn holding its unread
// input; the loop's own copy is to be closed after.
func detach(c gnet.Conn) (*unreadConn, error) {
	fd, err := c.Dup()
	if err != nil {
		return nil, err
	}
	buf, _ := c.Peek(-1)
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return &unreadConn{Conn: nc, unread: append([]byte(nil), buf...)}, nil
}

// unreadConn is a connection with input already read from it.
type unreadConn struct {
	net.Conn
	unread  []byte
	release func() // the connection's slot, if any
	once    sync.Once
}

func (c *unreadConn) Read(p []byte) (int, error) {
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *unreadConn) Close() error {
	if c.release != nil {
		c.once.Do(c.release)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes, as h1 does before a lingering close.
func (c *unreadConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (lx *loopExchange) ep() *balance.Endpoint { return lx.ex.tried[0] }

// beginOnLoop does what ServeHTTP does up to its first attempt, for a
// request on a loop, and appends the head to send to dst. It reports
// false, having changed nothing the goroutine path reads, for a request
// the loop does not serve.
func (p *Proxy) beginOnLoop(lx *loopExchange, dst []byte) ([]byte, bool) {
	r := &lx.req
	if !isIdempotent(r) || r.Method == http.MethodHead || isUpgrade(r) || first(r.Header, "Expect") != "" {
		return dst, false
	}
	start := time.Now()
	trusted := p.settings.trusted(r)
	routePath, err := p.normalizeRequest(r)
	if err != nil {
		return dst, false
	}
	route := p.gw.Table().Match(r.Host, routePath)
	if route == nil || route.policy.h2c {
		return dst, false
	}
	if max := route.policy.maxInflight; max > 0 && route.state.inflight.Load() >= int64(max) {
		return dst, false
	}
	ex := &lx.ex
	ex.Context, ex.span = context.Background(), noSpan
	ex.route, ex.trusted, ex.start, ex.bodyOK, ex.timed = route, trusted, start, true, true
	ex.deadline = start.Add(route.policy.timeout)
	ex.tried = ex.triedBuf[:0]
	// As in ServeHTTP, before the outgoing request's forwarding headers
	// are set: the peer's are dropped first.
	dropUntrustedHeaders(r.Header, trusted)
	// The instance is picked before the spans start: a request handed
	// over here starts its own.
	out := p.outgoing(r, ex)
	now := p.gw.at(start)
	ep, err := p.pick(out, ex, now)
	if err != nil {
		return dst, false
	}
	ctx, span := p.startServerSpan(r, trusted)
	ex.Context, ex.span = ctx, span
	ex.notePanic()
	out.URL.Host = ep.Addr
	ex.tried = append(ex.tried, ep)
	ex.attempts++
	lx.ctx, lx.span = ctx, noSpan
	if p.spans {
		lx.ctx, lx.span = p.tracer.Start(ctx, out.Method, clientSpan)
		p.propagator.Inject(lx.ctx, propagation.HeaderCarrier(out.Header))
	}
	head, err := appendRequestHead(dst, out)
	if err != nil {
		// A header no instance may be sent: the goroutine path's
		// transport refuses it too, and answers for it.
		lx.span.End()
		span.End()
		return dst, false
	}
	route.state.inflight.Add(1)
	route.state.budget.request(now)
	lx.attemptAt = start
	ep.Stats.Begin()
	return head, true
}

// finishOnLoop does what ServeHTTP and the attempt do after the answer,
// for a request on a loop: answered is false when no answer came (the
// client left first).
func (p *Proxy) finishOnLoop(lx *loopExchange, status int, answered bool) {
	ex := &lx.ex
	route := ex.route
	ep := ex.tried[0]
	ended := lx.headAt
	o, code := classifyStatus(status), status
	if !answered {
		ended, o, code = time.Now(), failedSent, 0
	}
	ep.Stats.EndAt(ended, ended.Sub(lx.attemptAt), code, !answered)
	span := lx.span
	if span.IsRecording() {
		if answered {
			span.SetAttributes(clientAttributes(ex.attrBuf(), &ex.out, ex, ep, succeeded, code, nil)...)
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
		} else {
			span.SetAttributes(clientAttributes(ex.attrBuf(), &ex.out, ex, ep, succeeded, 0, context.Canceled)...)
			span.RecordError(context.Canceled)
			span.SetStatus(codes.Error, context.Canceled.Error())
		}
	}
	span.End()
	p.gw.metrics.observeAttempt(lx.ctx, route, ep, o, lx.attemptAt, ended)
	if answered {
		p.passiveHealth(&ex.out, ex, ep, o, p.gw.at(ended))
	} // else the client left: not the instance's fault
	route.state.inflight.Add(-1)
	r := &lx.req
	ex.recordServerSpan(r, status)
	ex.span.End()
	p.gw.metrics.observeRequest(ex, route, r.Method, status, ex.start)
	p.logRequest(ex, r, ex, status, ex.start)
}

// gnetLogger passes gnet's log lines to the server's logger; its notes
// on its own workings at debug level.
type gnetLogger struct{ log hclog.Logger }

func (l gnetLogger) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l gnetLogger) Infof(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l gnetLogger) Warnf(format string, args ...any)  { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l gnetLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }
func (l gnetLogger) Fatalf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }
