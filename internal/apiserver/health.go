package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"unicode"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/policy"
)

// HealthBackend is what the server needs to serve GPU health. It is
// optional: a Backend without it answers /v1/health with 404.
type HealthBackend interface {
	Health() []api.HealthStatus
	SetHealth(req api.HealthSetRequest) (*api.HealthStatus, error)
}

// ErrUnknownGPU is wrapped by backends for an id that names no GPU.
var ErrUnknownGPU = errors.New("no such GPU")

const maxReason = 200

func validateHealthSet(r api.HealthSetRequest) error {
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
	mux.HandleFunc("GET /"+api.Version+"/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, hb.Health())
	})
	mux.HandleFunc("POST /"+api.Version+"/health", func(w http.ResponseWriter, r *http.Request) {
		var req api.HealthSetRequest
		if !decode(w, r, &req) {
			return
		}
		if err := validateHealthSet(req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		res, err := hb.SetHealth(req)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, res)
		case errors.Is(err, ErrUnknownGPU):
			writeError(w, http.StatusNotFound, err.Error())
		default:
			writeError(w, http.StatusUnprocessableEntity, err.Error())
		}
	})
}
