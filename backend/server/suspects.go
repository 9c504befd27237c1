package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/conferral/conferral/backend/fingerprint"

	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// checkVerify validates a verification request: a stored fingerprint and
// exactly one suspect, an endpoint URL that the guard accepts.
func (s *Server) checkVerify(ctx context.Context, a *shared.VerifyArgs) error {
	if err := s.checkVerifyBase(ctx, a); err != nil {
		return err
	}
	n := 0
	for _, v := range []string{a.Model, a.Endpoint, a.Upload} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return badInput("verify: name exactly one suspect (a stored model, an endpoint or an upload), not %d", n)
	}
	switch {
	case a.Model != "":
		if _, _, err := s.store.Model(ctx, a.Model); err != nil {
			if errors.Is(err, ErrNotFound) {
				return badInput("verify: no stored model %q", a.Model)
			}
			return err
		}
	case a.Endpoint != "":
		if _, err := suspect.ParseProtocol(a.Protocol); err != nil {
			return badInput("verify: %v", err)
		}
		if _, err := suspect.CheckURL(a.Endpoint, s.cfg.AllowPrivate); err != nil {
			if errors.Is(err, suspect.ErrRefused) && !s.cfg.AllowPrivate {
				return badInput("verify: endpoint %v (the operator can allow private addresses with --allow-private)", err)
			}
			return badInput("verify: endpoint %v", err)
		}
	case a.Upload != "":
		if _, err := s.store.Upload(ctx, a.Upload); err != nil {
			if errors.Is(err, ErrNotFound) {
				return badInput("verify: no uploaded model %q", a.Upload)
			}
			return err
		}
	}
	return nil
}

// checkVerifyBase checks what does not depend on the suspect.
func (s *Server) checkVerifyBase(ctx context.Context, a *shared.VerifyArgs) error {
	if a.Fingerprint == "" {
		return badInput("verify: a fingerprint ID is required")
	}
	_, path, err := s.store.Fingerprint(ctx, a.Fingerprint)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return badInput("verify: no stored fingerprint %q", a.Fingerprint)
		}
		return err
	}
	if a.Sequential && !fileExists(fingerprint.CalibrationPath(path)) {
		return badInput("verify: sequential verification tests against a calibrated null, and fingerprint %q has no calibration (conferral calibrate)", a.Fingerprint)
	}
	if !(a.Theta >= 0 && a.Theta <= 1) || !(a.FPR >= 0 && a.FPR < 0.5) {
		return badInput("verify: theta must lie in [0,1] and fpr in [0,0.5)")
	}
	if in := a.Input; in != nil {
		l, err := suspect.ParseLayout(in.Layout)
		if err != nil {
			return badInput("verify: %v", err)
		}
		if a.Upload != "" && l != suspect.LayoutAuto && l != suspect.NCHW && l != suspect.NHWC {
			return badInput("verify: an uploaded ONNX model takes layout auto, nchw or nhwc, not %q", in.Layout)
		}
		if in.Scale < 0 {
			return badInput("verify: scale %v is negative", in.Scale)
		}
	}
	return nil
}

// openSuspect builds the suspect a verification names; release frees it.
// classes name the fingerprint's labels, for endpoints that answer with
// class names.
func (s *Server) openSuspect(ctx context.Context, a shared.VerifyArgs, classes []string) (sus suspect.Suspect, release func(), err error) {
	in := shared.UploadFields{}
	if a.Input != nil {
		in = *a.Input
	}
	switch {
	case a.Model != "":
		info, path, err := s.store.Model(ctx, a.Model)
		if err != nil {
			return nil, nil, err
		}
		m, _, err := train.LoadDeployed(path, s.device) // a model or a deployed ensemble
		if err != nil {
			return nil, nil, fmt.Errorf("loading suspect %s: %w", info.Name, err)
		}
		return &suspect.Local{Model: m, Name: cmp.Or(a.Name, info.Name)}, m.Free, nil
	case a.Endpoint != "":
		proto, err := suspect.ParseProtocol(a.Protocol)
		if err != nil {
			return nil, nil, err
		}
		layout, err := suspect.ParseLayout(in.Layout)
		if err != nil {
			return nil, nil, err
		}
		r, err := suspect.NewRemote(a.Endpoint, suspect.RemoteOptions{Protocol: proto, Layout: layout, Scale: in.Scale,
			Classes: classes, Timeout: s.cfg.EndpointTimeout, AllowPrivate: s.cfg.AllowPrivate})
		if err != nil {
			return nil, nil, err
		}
		if a.Name != "" {
			return named{r, a.Name}, func() {}, nil
		}
		return r, func() {}, nil
	case a.Upload != "":
		return s.openUpload(ctx, a, in)
	}
	return nil, nil, errors.New("verify: no suspect named")
}

// named gives a remote suspect the user's name in the verdict; the
// embedded Remote still counts its queries, retries included.
type named struct {
	*suspect.Remote
	name string
}

func (n named) String() string { return n.name }
