package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode"

	"github.com/hotgpu/hotgpu/internal/policy"
)

// HealthBackend is what the server needs to serve GPU health. It is
// optional: a Backend without it answers /v1/health with 404.
type HealthBackend interface {
	Health() []HealthStatus
	SetHealth(req HealthSetRequest) (*HealthStatus, error)
}

// ErrUnknownGPU is wrapped by backends for an id that names no GPU.
var ErrUnknownGPU = errors.New("no such GPU")

// HealthStatus is one GPU's health, as `hotgpu health` shows it.
type HealthStatus struct {
	Index   int    `json:"index"`
	UUID    string `json:"uuid"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
	// Manual marks stay until `hotgpu health set ID healthy`; others
	// recover by themselves at RecoversAt unless another error comes.
	Manual bool `json:"manual,omitempty"`
	// Fatal marks an error that needs a GPU reset or a reboot (a lost GPU,
	// Xid 79, ...): it stays until the GPU is set healthy after the reset,
	// or until NVML reads a lost GPU again.
	Fatal      bool      `json:"fatal,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	RecoversAt time.Time `json:"recoversAt,omitzero"`
}

// HealthSetRequest marks a GPU (index or UUID) healthy or unhealthy by hand.
type HealthSetRequest struct {
	ID      string `json:"id"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason,omitempty"`
}

const maxReason = 200

func (r HealthSetRequest) validate() error {
	if err := policy.ValidateID(r.ID); err != nil {
		return err
	}
	if len(r.Reason) > maxReason {
		return fmt.Errorf("reason is longer than %d bytes", maxReason)
	}
	for _, c := range r.Reason {
		if !unicode.IsPrint(c) {
			return errors.New("reason must be printable text (it is logged and shown to kubelet users)")
		}
	}
	return nil
}

func (s *Server) healthRoutes(mux *http.ServeMux) {
	hb, ok := s.backend.(HealthBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /"+Version+"/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, hb.Health())
	})
	mux.HandleFunc("POST /"+Version+"/health", func(w http.ResponseWriter, r *http.Request) {
		var req HealthSetRequest
		if !decode(w, r, &req) {
			return
		}
		if err := req.validate(); err != nil {
			writeJSON(w, http.StatusBadRequest, Error{err.Error()})
			return
		}
		res, err := hb.SetHealth(req)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, res)
		case errors.Is(err, ErrUnknownGPU):
			writeJSON(w, http.StatusNotFound, Error{err.Error()})
		default:
			writeJSON(w, http.StatusUnprocessableEntity, Error{err.Error()})
		}
	})
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
