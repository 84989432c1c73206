package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

var answerSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\ncontent-length:   007  \r\nx-odd-Name: \t v \t\r\n\r\n1234567extra",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",                        // cut short
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", // net/http's
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n\r\nuntil close",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\nX: y\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 \xff\xfe\r\nX: \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: X-Private, close\r\nX-Private: a\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nA: 1\r\nKeep-Alive: 1\r\nB: 2\r\nUpgrade: x\r\nC: 3\r\nTe: y\r\nD: 4\r\nContent-Length: 0\r\nE: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nKeep-Alive: 1\r\nA: 1\r\nConnection: keep-alive,Close\r\nContent-Type: a\r\ncontent-type: b\r\nContent-Length: 0\r\n\r\n",
}

// TestSimpleAnswerShape: the common answer is taken; every other shape is
// left, unconsumed, to net/http's reader.
func TestSimpleAnswerShape(t *testing.T) {
	get, _ := http.NewRequest("GET", "http://x/", nil)
	for _, tc := range []struct {
		answer string
		taken  bool
	}{
		{answerSeeds[0], true},
		{answerSeeds[1], true},
		{answerSeeds[3], true},
		{answerSeeds[4], true},
		{answerSeeds[7], false},  // two lengths: net/http decides
		{answerSeeds[9], false},  // chunked
		{answerSeeds[11], false}, // ends with the connection
		{answerSeeds[12], false}, // HTTP/1.0
		{answerSeeds[13], false}, // no body by its status
		{answerSeeds[15], false}, // 1xx first
		{answerSeeds[16], false}, // a bare LF
		{answerSeeds[17], false}, // a folded line
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.answer), 4096)
		resp := SimpleAnswer(br, get)
		if (resp != nil) != tc.taken {
			t.Errorf("%q: taken %v, want %v", tc.answer, resp != nil, tc.taken)
		}
		if resp == nil && br.Buffered() != len(tc.answer) {
			t.Errorf("%q: left to net/http with %d of %d bytes consumed", tc.answer, len(tc.answer)-br.Buffered(), len(tc.answer))
		}
	}
	head, _ := http.NewRequest("HEAD", "http://x/", nil)
	if SimpleAnswer(bufio.NewReader(strings.NewReader(answerSeeds[0])), head) != nil {
		t.Error("the answer to a HEAD taken: its Content-Length announces a body that never comes")
	}
}

// TestSimpleAnswerWaits: a head that arrives in pieces is waited for.
func TestSimpleAnswerWaits(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		for _, piece := range []string{"HTTP/1.1 200 OK\r\nContent-Le", "ngth: 2\r\n", "\r", "\nhi"} {
			_, _ = pw.Write([]byte(piece))
		}
		pw.Close()
	}()
	get, _ := http.NewRequest("GET", "http://x/", nil)
	resp := SimpleAnswer(bufio.NewReaderSize(pr, 4096), get)
	if resp == nil {
		t.Fatal("a head in pieces was not taken")
	}
	if b, err := io.ReadAll(resp.Body); string(b) != "hi" || err != nil {
		t.Errorf("body %q, %v", b, err)
	}
}

// TestSimpleAnswerHeadShape: what the relay cannot keep, a Connection
// naming fields and a head split in too many places, is taken with a
// Header, as SimpleAnswer takes it.
func TestSimpleAnswerHeadShape(t *testing.T) {
	get, _ := http.NewRequest("GET", "http://x/", nil)
	for _, tc := range []struct {
		answer  string
		relayed bool
	}{
		{answerSeeds[0], true},
		{answerSeeds[4], true},
		{answerSeeds[28], false}, // Connection: X-Private
		{answerSeeds[29], false}, // five runs of kept lines
		{answerSeeds[30], true},
	} {
		var head AnswerHead
		br := bufio.NewReaderSize(strings.NewReader(tc.answer), 4096)
		resp := SimpleAnswerHead(br, get, &head)
		if relayed := resp != nil && resp.Header == nil; relayed != tc.relayed {
			t.Errorf("%q: relayed %v, want %v", tc.answer, relayed, tc.relayed)
		}
		if !tc.relayed && resp == nil {
			t.Errorf("%q: left by the relay, and then by SimpleAnswer", tc.answer)
		}
	}
}

// FuzzSimpleAnswer holds SimpleAnswer to net/http's reader: whatever it
// takes, http.ReadResponse reads the same way: the same status, headers,
// length and close, the same body bytes, an error where it errs. What
// SimpleAnswerHead takes, SimpleAnswer takes the same way, and the head
// it keeps holds SimpleAnswer's headers but the length and hop-by-hop
// fields.
func FuzzSimpleAnswer(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, _ := http.NewRequest("GET", "http://x/", nil)
		checkRelayed(t, data, req)
		fast := SimpleAnswer(bufio.NewReaderSize(bytes.NewReader(data), 4096), req)
		if fast == nil {
			return
		}
		slow, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), req)
		if err != nil {
			t.Fatalf("taken, but net/http refuses it: %v", err)
		}
		if fast.Status != slow.Status || fast.StatusCode != slow.StatusCode || fast.Proto != slow.Proto ||
			fast.ContentLength != slow.ContentLength || fast.Close != slow.Close {
			t.Fatalf("status %q %d %s length %d close %v, net/http: %q %d %s length %d close %v",
				fast.Status, fast.StatusCode, fast.Proto, fast.ContentLength, fast.Close,
				slow.Status, slow.StatusCode, slow.Proto, slow.ContentLength, slow.Close)
		}
		if !reflect.DeepEqual(fast.Header, slow.Header) {
			t.Fatalf("headers %q, net/http: %q", fast.Header, slow.Header)
		}
		fb, ferr := io.ReadAll(fast.Body)
		sb, serr := io.ReadAll(slow.Body)
		if !bytes.Equal(fb, sb) || (ferr == nil) != (serr == nil) {
			t.Fatalf("body %q (%v), net/http: %q (%v)", fb, ferr, sb, serr)
		}
	})
}

var requestSeeds = []string{
	"GET /hello HTTP/1.1\r\nHost: site\r\nUser-Agent: wrk\r\n\r\n",
	"POST /p?q=1 HTTP/1.1\r\nHost: site\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabcGET / HTTP/1.1\r\n",
	"GET /a%20b?x=%zz HTTP/1.1\r\nHost: site\r\nConnection: close\r\nX: \t v \r\nx: w\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nPragma: no-cache\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET http://site/ HTTP/1.1\r\nHost: other\r\n\r\n",
	"CONNECT site:443 HTTP/1.1\r\nHost: site:443\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: site\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: site\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: site\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: site\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: site\r\nContent-Length: 5\r\n\r\nab",
	"GET / HTTP/1.1\nHost: site\n\n",
	"GET /\x7f HTTP/1.1\r\nHost: site\r\n\r\n",
	"G(T / HTTP/1.1\r\nHost: site\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: site\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: site\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: site\r\n folded\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: si\x00te\r\n\r\n",
	"GET //x/../y HTTP/1.1\r\nHost: site\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}

// TestSimpleRequestShape: the common request is taken, anything else left
// to net/http's reader.
func TestSimpleRequestShape(t *testing.T) {
	for _, tc := range []struct {
		request string
		taken   bool
	}{
		{requestSeeds[0], true},
		{requestSeeds[1], true},
		{requestSeeds[2], true},
		{requestSeeds[3], false},  // two Hosts: net/http refuses
		{requestSeeds[4], false},  // Pragma, which net/http rewrites
		{requestSeeds[6], false},  // absolute form
		{requestSeeds[7], false},  // CONNECT
		{requestSeeds[8], false},  // asterisk form
		{requestSeeds[9], false},  // HTTP/1.0
		{requestSeeds[10], false}, // chunked
		{requestSeeds[13], false}, // bare LF
		{requestSeeds[18], false}, // folded line
	} {
		br := bufio.NewReader(strings.NewReader(tc.request))
		buf, _ := br.Peek(len(tc.request))
		n := headLen(buf)
		if n == 0 {
			t.Fatalf("%q: no head", tc.request)
		}
		if taken := parseSimpleRequest(buf[:n], br, new(http.Request), nil); taken != tc.taken {
			t.Errorf("%q: taken %v, want %v", tc.request, taken, tc.taken)
		}
	}
}

// FuzzSimpleRequest holds parseSimpleRequest to net/http's reader:
// whatever it takes, http.ReadRequest reads the same way.
func FuzzSimpleRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headLen(data)
		if n == 0 {
			return
		}
		br := bufio.NewReader(bytes.NewReader(data))
		_, _ = br.Discard(n)
		fast := new(http.Request)
		if !parseSimpleRequest(data[:n], br, fast, nil) {
			return
		}
		slow, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("taken, but net/http refuses it: %v", err)
		}
		if fast.Method != slow.Method || fast.URL.String() != slow.URL.String() || fast.RequestURI != slow.RequestURI ||
			fast.Proto != slow.Proto || fast.ProtoMajor != slow.ProtoMajor || fast.ProtoMinor != slow.ProtoMinor ||
			fast.Host != slow.Host || fast.ContentLength != slow.ContentLength || fast.Close != slow.Close ||
			len(slow.TransferEncoding) > 0 || slow.Trailer != nil {
			t.Fatalf("request %+v,\nnet/http: %+v", fast, slow)
		}
		if !reflect.DeepEqual(fast.URL, slow.URL) {
			t.Fatalf("URL %#v, net/http: %#v", fast.URL, slow.URL)
		}
		if !reflect.DeepEqual(fast.Header, slow.Header) {
			t.Fatalf("headers %q, net/http: %q", fast.Header, slow.Header)
		}
		if (fast.Body == http.NoBody) != (slow.Body == http.NoBody) {
			t.Fatalf("body %T, net/http: %T", fast.Body, slow.Body)
		}
		fb, ferr := io.ReadAll(fast.Body)
		sb, serr := io.ReadAll(slow.Body)
		if !bytes.Equal(fb, sb) || (ferr == nil) != (serr == nil) {
			t.Fatalf("body %q (%v), net/http: %q (%v)", fb, ferr, sb, serr)
		}
	})
}

// checkRelayed holds what SimpleAnswerHead takes of data to what
// SimpleAnswer takes.
func checkRelayed(t *testing.T, data []byte, req *http.Request) {
	t.Helper()
	var head AnswerHead
	relayed := SimpleAnswerHead(bufio.NewReaderSize(bytes.NewReader(data), 4096), req, &head)
	fast := SimpleAnswer(bufio.NewReaderSize(bytes.NewReader(data), 4096), req)
	if (relayed == nil) != (fast == nil) {
		t.Fatalf("taken by SimpleAnswerHead %v, by SimpleAnswer %v", relayed != nil, fast != nil)
	}
	if relayed == nil {
		return
	}
	if relayed.Header != nil {
		// Not relayable: taken as SimpleAnswer takes it.
		if !reflect.DeepEqual(relayed.Header, fast.Header) || relayed.StatusCode != fast.StatusCode ||
			relayed.ContentLength != fast.ContentLength || relayed.Close != fast.Close {
			t.Fatalf("taken with headers %q, status %d, length %d; SimpleAnswer's: %q, %d, %d",
				relayed.Header, relayed.StatusCode, relayed.ContentLength, fast.Header, fast.StatusCode, fast.ContentLength)
		}
		return
	}
	if relayed.StatusCode != fast.StatusCode || relayed.Status != fast.Status ||
		relayed.ContentLength != fast.ContentLength || relayed.Close != fast.Close ||
		head.Code != fast.StatusCode || head.Length != fast.ContentLength {
		t.Fatalf("relayed %d %q length %d close %v, head %d length %d; SimpleAnswer: %d %q length %d close %v",
			relayed.StatusCode, relayed.Status, relayed.ContentLength, relayed.Close, head.Code, head.Length,
			fast.StatusCode, fast.Status, fast.ContentLength, fast.Close)
	}
	want := fast.Header.Clone()
	for name := range want {
		if name == "Content-Length" || IsHopByHop(name) {
			delete(want, name)
		}
	}
	if got := head.Header(); !reflect.DeepEqual(got, want) {
		t.Fatalf("relayed headers %q, want %q", got, want)
	}
	if head.ContentType() != first(fast.Header["Content-Type"]) || head.hasDate != (fast.Header["Date"] != nil) {
		t.Fatalf("Content-Type %q, has a date %v; SimpleAnswer's: %q", head.ContentType(), head.hasDate, fast.Header)
	}
	rb, rerr := io.ReadAll(relayed.Body)
	fb, ferr := io.ReadAll(fast.Body)
	if !bytes.Equal(rb, fb) || (rerr == nil) != (ferr == nil) {
		t.Fatalf("relayed body %q (%v), SimpleAnswer's %q (%v)", rb, rerr, fb, ferr)
	}
}

// TestSimpleRequestHeaderRoom: a proxy's forwarding headers fit in the
// Header a request is parsed into, without the map being made again.
func TestSimpleRequestHeaderRoom(t *testing.T) {
	head := []byte("GET / HTTP/1.1\r\nHost: site\r\nUser-Agent: a\r\nAccept: */*\r\nAccept-Language: en\r\n" +
		"Accept-Encoding: gzip\r\nCookie: a=b\r\nReferer: http://site/\r\nSec-Fetch-Mode: cors\r\n\r\n")
	br := bufio.NewReader(strings.NewReader(""))
	var req http.Request
	parse := func() {
		if !parseSimpleRequest(head, br, &req, nil) {
			t.Fatal("not taken")
		}
	}
	alone := testing.AllocsPerRun(100, parse)
	forwarded := testing.AllocsPerRun(100, func() {
		parse()
		for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"} {
			req.Header[name] = nil
		}
	})
	if forwarded != alone {
		t.Errorf("%v allocations with the forwarding headers added, %v without", forwarded, alone)
	}
}
