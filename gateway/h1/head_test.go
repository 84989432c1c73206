package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzHeadLen holds headLen to net/http's reader: whenever
// http.ReadRequest reads a request head, headLen finds that head whole and
// no more, so peekHead never lets ReadRequest wait for bytes, and the raw
// head the server checks is the one that was parsed.
func FuzzHeadLen(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\nGET /next HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), len(in)+16)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n := headLen(in)
		if n == 0 {
			t.Fatalf("ReadRequest read a head from %q; headLen found none", in)
		}
		// What ReadRequest consumed is the head: the body (if any) is not
		// read until asked for.
		if consumed := len(in) - br.Buffered(); consumed != n {
			t.Fatalf("ReadRequest consumed %d bytes of %q, headLen says %d", consumed, in, n)
		}
		if len(req.TransferEncoding) > 0 && bytes.Contains(bytes.ToLower(in[:n]), []byte("\ncontent-length:")) && !HeadHas(in[:n], "Content-Length") {
			t.Fatalf("HeadHas missed the Content-Length of %q", in[:n])
		}
	})
}
