package metrics

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limits bound what clients of the metrics port can hold. It is served on
// the pod network, where anyone may connect: a client that sends slowly,
// idles or opens many connections must not pin hotgpud's memory or fds.
type limits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
	maxConns                      int
}

// defaultLimits fit probes and a Prometheus scrape (a few KiB of text) with
// a wide margin; a scrape is one connection, kept alive between scrapes.
var defaultLimits = limits{
	readHeader:     5 * time.Second,
	read:           10 * time.Second,
	write:          30 * time.Second,
	idle:           2 * time.Minute, // above Prometheus's default 1 min scrape interval
	maxHeaderBytes: 16 << 10,
	maxConns:       32,
}

func (l limits) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.readHeader,
		ReadTimeout:       l.read,
		WriteTimeout:      l.write,
		IdleTimeout:       l.idle,
		MaxHeaderBytes:    l.maxHeaderBytes,
	}
}

// limitListener accepts at most cap(sem) connections at a time; the next
// Accept waits until one of them is closed, leaving newer clients in the
// kernel's backlog. (golang.org/x/net/netutil.LimitListener, which this
// module does not otherwise import.)
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close also ends an Accept waiting for a free slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
