package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// server is one life of the plugin's gRPC server.
type server struct {
	grpc *grpc.Server
	done chan error // receives Serve's result once
}

// Run serves the plugin and keeps it registered until ctx ends. It starts
// over — new socket, new registration — when kubelet re-creates
// kubelet.sock (a kubelet restart, which also deletes our socket), when our
// socket disappears, and when the gRPC server fails. A failed registration
// (kubelet not up yet) is retried. On a node without kubelet (no
// kubelet.sock) it serves nothing and leaves no files behind.
func (p *Plugin) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("failed to watch %s: %w", p.dir, err)
	}
	defer w.Close()
	watching := false
	var srv *server
	defer func() { p.stop(srv) }()
	retry := time.NewTimer(0)
	defer retry.Stop()
	// A kubelet restart is several events in a row (our socket removed,
	// kubelet.sock re-created); acting on each registered twice within a
	// second, which can leave kubelet tracking a stale endpoint. settle waits
	// for the burst to end and then serves and registers once.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		var serveErr <-chan error
		if srv != nil {
			serveErr = srv.done
		}
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C:
			// The dir appears with kubelet; until then there is nothing to watch.
			if !watching {
				watching = w.Add(p.dir) == nil
			}
			srv = p.ensure(ctx, srv, retry)
		case <-p.lost:
			retry.Reset(p.retry)
		case err := <-serveErr:
			p.log.WithError(err).Warn("device plugin gRPC server stopped; starting it again")
			srv = p.restart(ctx, nil, retry)
		case ev := <-w.Events:
			if p.restartOn(ev, srv) {
				settle.Reset(settleDelay)
			}
		case <-settle.C:
			srv = p.restart(ctx, srv, retry)
		case err := <-w.Errors:
			p.log.WithError(err).Warn("watching the kubelet dir failed; relying on periodic checks")
		}
	}
}

// settleDelay is how long a burst of kubelet-dir events must be quiet
// before the plugin serves and registers anew.
const settleDelay = 500 * time.Millisecond

// restartOn reports whether ev means we must serve and register anew:
// kubelet.sock was (re)created, or our own socket was removed.
func (p *Plugin) restartOn(ev fsnotify.Event, srv *server) bool {
	switch filepath.Base(ev.Name) {
	case filepath.Base(pluginapi.KubeletSocket):
		if ev.Op&fsnotify.Create != 0 {
			p.log.Info("kubelet.sock re-created (kubelet restarted); registering again")
			return true
		}
	case p.socketName:
		// Our own restarts remove and re-create it: only a socket that is
		// still gone means someone else (kubelet) removed it.
		if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 && srv != nil && !exists(p.Socket()) {
			p.log.Info("plugin socket removed (kubelet restarted?); serving and registering again")
			return true
		}
	}
	return false
}

func (p *Plugin) restart(ctx context.Context, srv *server, retry *time.Timer) *server {
	p.stop(srv)
	return p.ensure(ctx, nil, retry)
}

// ensure makes sure the server runs, our socket exists and kubelet has us
// registered; whatever is missing is retried later. It also re-checks a
// registered plugin periodically, for events the watch may have missed.
func (p *Plugin) ensure(ctx context.Context, srv *server, retry *time.Timer) *server {
	if srv == nil && !exists(p.kubeletSocket()) {
		// No kubelet on this node (yet): serve nothing, leave no socket.
		retry.Reset(5 * p.retry)
		return nil
	}
	if srv != nil {
		if _, err := os.Stat(p.Socket()); err != nil {
			p.stop(srv)
			srv = nil
		} else if p.abandoned() {
			p.log.Warn("kubelet accepted the registration but never connected (or left); serving and registering again")
			p.stop(srv)
			srv = nil
		}
	}
	if srv == nil {
		var err error
		if srv, err = p.serve(); err != nil {
			p.log.WithError(err).Error("failed to start device plugin server")
			retry.Reset(p.retry)
			return nil
		}
	}
	if !p.registered.Load() {
		if err := p.register(ctx); err != nil {
			p.log.WithError(err).Warn("failed to register with kubelet; will retry")
			retry.Reset(p.retry)
			return srv
		}
	}
	retry.Reset(5 * p.retry)
	return srv
}

// serve listens on our socket (replacing a stale one) and serves in the
// background.
func (p *Plugin) serve() (*server, error) {
	path := p.Socket()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", path, err)
	}
	s := &server{grpc: grpc.NewServer(), done: make(chan error, 1)}
	pluginapi.RegisterDevicePluginServer(s.grpc, p)
	go func() {
		err := s.grpc.Serve(ln)
		if err == nil {
			err = errors.New("server exited")
		}
		s.done <- err
	}()
	return s, nil
}

// stop ends a server life; kubelet sees its ListAndWatch stream close.
func (p *Plugin) stop(srv *server) {
	p.registered.Store(false)
	if srv == nil {
		return
	}
	srv.grpc.Stop()
	_ = os.Remove(p.Socket())
}

// register tells kubelet about our socket and resource.
func (p *Plugin) register(ctx context.Context) error {
	kubelet := p.kubeletSocket()
	if _, err := os.Stat(kubelet); err != nil {
		return fmt.Errorf("kubelet is not serving device plugins at %s (is kubelet running with this --root-dir?): %w", kubelet, err)
	}
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("failed to connect to kubelet at %s: %w", kubelet, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(rctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socketName,
		ResourceName: p.resource,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("kubelet refused registration of %s: %w", p.resource, err)
	}
	p.registered.Store(true)
	p.registeredAt.Store(time.Now().UnixNano())
	p.registrations.Add(1)
	p.log.WithFields(map[string]any{"resource": p.resource, "socket": p.Socket()}).Info("registered with kubelet")
	return nil
}

// abandoned reports a registration kubelet is not using: no ListAndWatch
// stream for a few retry intervals after it was accepted. It happens when a
// kubelet restart races the registration (the old kubelet accepts, the new
// one never hears of us).
func (p *Plugin) abandoned() bool {
	if !p.registered.Load() || p.streams.Load() > 0 {
		return false
	}
	return time.Since(time.Unix(0, p.registeredAt.Load())) > 3*p.retry
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (p *Plugin) kubeletSocket() string {
	return filepath.Join(p.dir, filepath.Base(pluginapi.KubeletSocket))
}
