package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"
)

// serveTest serves a probe handler on a loopback port with l and returns
// its address; srvHook may adjust the server before it starts.
func serveTest(t *testing.T, l limits, srvHook func(*http.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.server(New(&fakeSource{}).Handler(nil, nil))
	if srvHook != nil {
		srvHook(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := serve(ctx, ln, srv, l.maxConns)
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestServeClosesSlowClients: a client that trickles its headers or its
// body, or keeps a connection open and idle, is disconnected. The limits
// are short here; the check is only that the server ends the connection
// (read until EOF, with a deadline far above them that would mean "never").
func TestServeClosesSlowClients(t *testing.T) {
	const short = 200 * time.Millisecond
	l := limits{readHeader: short, read: short, write: short, idle: short, maxHeaderBytes: 1 << 10, maxConns: 4}
	addr := serveTest(t, l, nil)
	tests := []struct {
		name string
		send string
	}{
		{"headers never end", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n"},
		{"body never ends", "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nsome"},
		{"idle keep-alive", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.Copy(io.Discard, c); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("the server still holds the connection after a minute")
				}
				t.Logf("connection ended with %v", err) // a reset is a close too
			}
		})
	}

	t.Run("huge header", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n", 64<<10, 0)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB of headers: %v %v, want 431", resp, err)
		}
	})
}

// TestServeCapsConnections: with the cap's worth of connections held open,
// more clients wait in the backlog and are served once those close; the
// server never has more than the cap open at once.
func TestServeCapsConnections(t *testing.T) {
	const maxConns = 2
	var mu sync.Mutex
	open, most := 0, 0
	accepted := make(chan struct{}, 16)
	l := limits{readHeader: time.Minute, read: time.Minute, write: time.Minute, idle: time.Minute, maxHeaderBytes: 1 << 10, maxConns: maxConns}
	addr := serveTest(t, l, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch st {
			case http.StateNew:
				open++
				most = max(most, open)
				accepted <- struct{}{}
			case http.StateClosed, http.StateHijacked:
				open--
			}
		}
	})
	// Hold the cap's worth of connections, sending nothing.
	var held []net.Conn
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		<-accepted
	}
	// More clients: without a cap they are served at once, beside the held ones.
	const more = 3
	done := make(chan error, more)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range more {
		go func() {
			resp, err := client.Get("http://" + addr + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
	}
	served := 0
	select {
	case err := <-done:
		served++
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(500 * time.Millisecond): // only gives an uncapped server time to show itself
	}
	for _, c := range held {
		c.Close()
	}
	for ; served < more; served++ {
		if err := <-done; err != nil {
			t.Fatalf("a client waiting for a free connection: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most > maxConns {
		t.Fatalf("the server had %d connections open at once, want at most %d", most, maxConns)
	}
}

// TestLimitListenerClose: Close ends an Accept that waits for a free slot.
func TestLimitListenerClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 1)
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}
