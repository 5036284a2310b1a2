package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Client talks to hotgpud over its socket: one connection per call, one
// HTTP/1.1 request written and one response read on it. net/http's client
// machinery (a transport, its connection pool and goroutines) cost the
// one-call CLI and hook about a millisecond of start-up per run, more than
// the work they ask for.
type Client struct {
	socket  string
	timeout time.Duration
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, timeout: 30 * time.Second}
}

// Attach asks for GPUs in a running container.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (*Result, error) {
	var res Result
	return &res, c.do(ctx, http.MethodPost, "attach", req, &res)
}

// Detach takes GPUs away from a running container.
func (c *Client) Detach(ctx context.Context, req DetachRequest) (*Result, error) {
	var res Result
	return &res, c.do(ctx, http.MethodPost, "detach", req, &res)
}

// GPUs lists every GPU and its holder.
func (c *Client) GPUs(ctx context.Context) ([]GPUStatus, error) {
	var res []GPUStatus
	return res, c.do(ctx, http.MethodGet, "gpus", nil, &res)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var res Status
	return &res, c.do(ctx, http.MethodGet, "status", nil, &res)
}

func (c *Client) do(ctx context.Context, method, op string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hotgpud/"+Version+"/"+op, &body)
	if err != nil {
		return err
	}
	req.Close = true // one request per connection
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) || isConnRefused(err) {
			return fmt.Errorf("cannot reach hotgpud at %s (is it running? are you root?): %w", c.socket, err)
		}
		return fmt.Errorf("failed to call hotgpud: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return fmt.Errorf("failed to call hotgpud: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) }) // a cancelled ctx ends the call
	defer stop()
	resp, err := exchange(conn, req)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("failed to call hotgpud: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e Error
		msg := fmt.Sprintf("hotgpud answered %s", resp.Status)
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Code: resp.StatusCode, Msg: msg}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// exchange writes req on conn and reads the response to it.
func exchange(conn net.Conn, req *http.Request) (*http.Response, error) {
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	return http.ReadResponse(bufio.NewReader(conn), req)
}

func isConnRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// Health lists every GPU's health.
func (c *Client) Health(ctx context.Context) ([]HealthStatus, error) {
	var res []HealthStatus
	return res, c.do(ctx, http.MethodGet, "health", nil, &res)
}

// SetHealth marks a GPU healthy or unhealthy.
func (c *Client) SetHealth(ctx context.Context, req HealthSetRequest) (*HealthStatus, error) {
	var res HealthStatus
	return &res, c.do(ctx, http.MethodPost, "health", req, &res)
}

// HookReserve records GPUs for a container a runtime is creating (hotgpu-hook).
func (c *Client) HookReserve(ctx context.Context, req HookReserveRequest) (*HookReservation, error) {
	var res HookReservation
	return &res, c.do(ctx, http.MethodPost, "hook/reserve", req, &res)
}

// HookRelease frees what HookReserve recorded for the container.
func (c *Client) HookRelease(ctx context.Context, containerID string) error {
	var freed []json.RawMessage
	return c.do(ctx, http.MethodPost, "hook/release", HookReleaseRequest{ContainerID: containerID}, &freed)
}

// StatusError is hotgpud's refusal: its message, and the HTTP status that
// classifies it (400 bad request, 403 not allowed, 404 no such container,
// 409 held, busy or not enough GPUs, 422 anything else).
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return e.Msg }
