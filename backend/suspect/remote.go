package suspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/conferral/conferral/backend/protocol/kserve"
	"github.com/conferral/conferral/backend/protocol/tfserving"
)

// Protocol is the REST dialect of a prediction endpoint.
type Protocol string

// The protocols Remote speaks.
const (
	// ProtocolAuto tells the protocol from the URL path (/v2/models/… is
	// KServe, /v1/models/… is TensorFlow Serving).
	ProtocolAuto Protocol = "auto"
	// KServe is the Open Inference Protocol (KServe v2, Triton, Seldon
	// MLServer): POST /v2/models/{name}/infer.
	KServe Protocol = "kserve"
	// TFServing is TensorFlow Serving's REST API: POST
	// /v1/models/{name}:predict.
	TFServing Protocol = "tfserving"
)

// ParseProtocol reads auto, kserve (or v2, oip) and tfserving (or tf).
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ProtocolAuto, nil
	case "kserve", "v2", "oip":
		return KServe, nil
	case "tfserving", "tf", "tensorflow":
		return TFServing, nil
	}
	return "", fmt.Errorf("unknown protocol %q (auto, kserve or tfserving)", s)
}

// dialect is what a Remote does in its protocol's way, with the
// protocol's messages (packages kserve and tfserving).
type dialect interface {
	// layout is the protocol's customary image layout.
	layout() Layout
	// metadata reads the input's name and shape from the model's
	// metadata; none of either: send as told.
	metadata(r *Remote, body []byte) (name string, shape []int64, err error)
	// request encodes one batch of images.
	request(r *Remote, w wire, b Images) []byte
	// labels decodes the answer to a batch of n images.
	labels(r *Remote, body []byte, n int) ([]int64, error)
}

// dialectOf is p's dialect (KServe's or TensorFlow Serving's).
func dialectOf(p Protocol) dialect {
	if p == TFServing {
		return tfDialect{}
	}
	return kserveDialect{}
}

// Layout is the order of an image's values on the wire.
type Layout string

// The layouts Remote can send.
const (
	// LayoutAuto takes the layout from the endpoint's metadata, else the
	// protocol's custom: NCHW for KServe, NHWC for TensorFlow Serving.
	LayoutAuto Layout = ""
	NCHW       Layout = "NCHW"
	NHWC       Layout = "NHWC"
	// NHW drops the channel axis of one-channel images (Keras models of
	// 28×28 digits often take [N, 28, 28]).
	NHW Layout = "NHW"
	// Flat sends each image as one vector of C·H·W values in CHW order
	// (MLPs and scikit-learn models take [N, 784]).
	Flat Layout = "flat"
)

// ParseLayout reads auto, nchw, nhwc, nhw and flat.
func ParseLayout(s string) (Layout, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "AUTO":
		return LayoutAuto, nil
	case "NCHW":
		return NCHW, nil
	case "NHWC":
		return NHWC, nil
	case "NHW":
		return NHW, nil
	case "FLAT":
		return Flat, nil
	}
	return "", fmt.Errorf("unknown layout %q (auto, nchw, nhwc, nhw or flat)", s)
}

// ErrBudget is returned when a query would exceed the query budget.
var ErrBudget = errors.New("query budget exhausted")

// RemoteOptions configure a Remote. The zero value is usable: automatic
// protocol and layout, values in [0,1], batches of 64, 30 s per request, 3
// retries, no budget, public addresses only.
type RemoteOptions struct {
	Protocol Protocol
	Layout   Layout
	// Scale multiplies the pixel values sent (1 when zero; 255 for
	// endpoints that expect 0–255).
	Scale float64
	// Classes name the labels, for endpoints that answer with a class
	// name; a number-like answer is taken as an index otherwise.
	Classes []string
	// Batch bounds the images per request (64 when zero).
	Batch int
	// Budget bounds the images sent, retries included (no bound when zero).
	Budget int
	// Timeout bounds each request (30 s when zero).
	Timeout time.Duration
	// Retries is how many times a request is retried after a safe failure:
	// connection refused, 5xx, 429 (3 when zero, none when negative).
	Retries int
	// Backoff is the first wait between attempts, doubled after each (250
	// ms when zero); a Retry-After header, up to a minute, overrides it.
	Backoff time.Duration
	// MaxResponseBytes caps a response body (64 MiB when zero). An answer
	// to n images is held to less (answerLimit): what n labels or score
	// vectors take as JSON, with room to spare, since decoding a JSON
	// answer costs many times its size.
	MaxResponseBytes int64
	// AllowPrivate allows loopback, private and link-local endpoints.
	AllowPrivate bool
	// AllowNets allows these networks although they are not public.
	AllowNets []netip.Prefix
	// InputName and OutputName pick tensors by name (from the metadata, or
	// "input" and the first output, when empty).
	InputName, OutputName string
	// Columnar sends TensorFlow Serving's {"inputs": …} instead of
	// {"instances": …}.
	Columnar bool
	// Header is added to every request (an Authorization header, say).
	Header http.Header
	// Client replaces the guarded client (Guard.Client); the guard is then
	// the caller's business.
	Client *http.Client
}

// Remote is a suspect behind a prediction endpoint. It is safe for
// concurrent use.
type Remote struct {
	o        RemoteOptions
	proto    Protocol
	dialect  dialect // proto's way
	shown    string  // the URL without credentials
	inferURL string
	metaURL  string // "" when the URL is not a standard one
	client   *http.Client

	mu     sync.Mutex
	sent   int // images sent, retries included
	metaOK bool
	input  string
	shape  []int64 // the endpoint's input shape, when it says
}

// NewRemote checks raw (CheckURL) and prepares a Remote. The URL names the
// model: http://host:port/v2/models/NAME[/versions/V][/infer] for KServe,
// http://host:port/v1/models/NAME[/versions/V|/labels/L][:predict] for
// TensorFlow Serving, or any URL to POST to with an explicit protocol.
func NewRemote(raw string, o RemoteOptions) (*Remote, error) {
	g := Guard{AllowPrivate: o.AllowPrivate, Allow: o.AllowNets}
	u, err := g.CheckURL(raw)
	if err != nil {
		return nil, err
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolAuto
	}
	if _, err := ParseProtocol(string(o.Protocol)); err != nil {
		return nil, err
	}
	if l, err := ParseLayout(string(o.Layout)); err != nil || l != o.Layout {
		return nil, fmt.Errorf("remote: unknown layout %q", o.Layout)
	}
	switch {
	case o.Scale == 0:
		o.Scale = 1
	case !(o.Scale > 0) || o.Scale > 1e6:
		return nil, fmt.Errorf("remote: scale %v is not a positive number", o.Scale)
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.Budget < 0 {
		return nil, fmt.Errorf("remote: negative budget %d", o.Budget)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Retries == 0 {
		o.Retries = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 64 << 20
	}
	r := &Remote{o: o, shown: u.Redacted()}
	r.proto, r.inferURL, r.metaURL, err = endpoints(u, o.Protocol)
	if err != nil {
		return nil, err
	}
	r.dialect = dialectOf(r.proto)
	r.client = o.Client
	if r.client == nil {
		r.client = g.Client(0) // each request has its own deadline (once)
	}
	return r, nil
}

// endpoints finds the protocol and the infer and metadata URLs of u.
func endpoints(u *url.URL, p Protocol) (Protocol, string, string, error) {
	path := u.EscapedPath()
	base := func(prefix string) (string, string, bool) {
		i := strings.Index(path, prefix)
		if i < 0 {
			return "", "", false
		}
		return path[:i+len(prefix)], path[i+len(prefix):], true
	}
	if p == ProtocolAuto || p == KServe {
		if head, rest, ok := base(kserve.Prefix); ok {
			segs := strings.Split(strings.TrimSuffix(rest, "/"), "/")
			if segs[0] == "" {
				return "", "", "", fmt.Errorf("remote: %s names no model", u.Redacted())
			}
			model := head + segs[0]
			switch {
			case len(segs) == 1 || (len(segs) == 2 && segs[1] == "infer"):
			case len(segs) >= 3 && segs[1] == "versions" && (len(segs) == 3 || (len(segs) == 4 && segs[3] == "infer")):
				model += "/versions/" + segs[2]
			default:
				return "", "", "", fmt.Errorf("remote: %s is not a KServe v2 model URL (/v2/models/NAME[/versions/V][/infer])", u.Redacted())
			}
			return KServe, withPath(u, model+"/infer"), withPath(u, model), nil
		}
		if p == KServe {
			return KServe, u.String(), "", nil
		}
	}
	if p == ProtocolAuto || p == TFServing {
		if head, rest, ok := base(tfserving.Prefix); ok {
			rest = strings.TrimSuffix(strings.TrimSuffix(rest, tfserving.PredictSuffix), "/")
			segs := strings.Split(rest, "/")
			if segs[0] == "" || strings.Contains(segs[0], ":") {
				return "", "", "", fmt.Errorf("remote: %s is not a TensorFlow Serving model URL (/v1/models/NAME[/versions/V][:predict])", u.Redacted())
			}
			switch {
			case len(segs) == 1:
			case len(segs) == 3 && (segs[1] == "versions" || segs[1] == "labels"):
			default:
				return "", "", "", fmt.Errorf("remote: %s is not a TensorFlow Serving model URL (/v1/models/NAME[/versions/V][:predict])", u.Redacted())
			}
			model := head + rest
			return TFServing, withPath(u, model+tfserving.PredictSuffix), withPath(u, model+tfserving.MetadataPath), nil
		}
		if p == TFServing {
			return TFServing, u.String(), "", nil
		}
	}
	return "", "", "", fmt.Errorf("remote: cannot tell the protocol of %s from its path (expected /v2/models/NAME or /v1/models/NAME); pass the protocol", u.Redacted())
}

// withQuery is u with its path replaced by the escaped path p.
func withPath(u *url.URL, p string) string {
	v := *u
	v.Path, v.RawPath = "", ""
	v.Fragment, v.RawFragment = "", ""
	s := v.String()
	if i := strings.IndexAny(s, "?"); i >= 0 {
		return s[:i] + p + s[i:]
	}
	return s + p
}

// String names the endpoint.
func (r *Remote) String() string { return r.shown }

// Protocol is the protocol in use.
func (r *Remote) Protocol() Protocol { return r.proto }

// Queries is the number of images sent so far, retries included.
func (r *Remote) Queries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent
}

// Budget is the query budget (0: none).
func (r *Remote) Budget() int { return r.o.Budget }

// Classify sends b in batches and returns the endpoint's labels. It
// refuses up front, without sending anything, when b does not fit in what
// is left of the budget.
func (r *Remote) Classify(ctx context.Context, b Images) ([]int64, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w, err := r.prepare(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := r.reserve(b.N); err != nil {
		return nil, err
	}
	per := b.C * b.H * b.W
	out := make([]int64, 0, b.N)
	for start := 0; start < b.N; start += r.o.Batch {
		n := min(r.o.Batch, b.N-start)
		part := Images{X: b.X[start*per : (start+n)*per], N: n, C: b.C, H: b.H, W: b.W}
		labels, err := r.infer(ctx, w, part)
		if err != nil {
			return nil, fmt.Errorf("images %d–%d: %w", start, start+n-1, err)
		}
		out = append(out, labels...)
	}
	return out, nil
}

// reserve checks that n more images fit the budget.
func (r *Remote) reserve(n int) error {
	if r.o.Budget == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent+n > r.o.Budget {
		return fmt.Errorf("%w: %d of %d images sent, %d more needed", ErrBudget, r.sent, r.o.Budget, n)
	}
	return nil
}

// count records n images sent, or refuses when they do not fit.
func (r *Remote) count(n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.o.Budget > 0 && r.sent+n > r.o.Budget {
		return fmt.Errorf("%w: %d of %d images sent, %d more needed", ErrBudget, r.sent, r.o.Budget, n)
	}
	r.sent += n
	return nil
}

// prepare reads the endpoint's metadata once (input name, shape, layout)
// and checks that images of b's size fit it.
func (r *Remote) prepare(ctx context.Context, b Images) (wire, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.metaOK { // read again on the next call after a failure
		r.input, r.shape = r.o.InputName, nil
		if r.metaURL != "" && (r.o.Layout == LayoutAuto || r.input == "") {
			if err := r.metadata(ctx); err != nil {
				return wire{}, err
			}
		}
		r.metaOK = true
		if r.input == "" {
			r.input = "input"
		}
	}
	layout := r.o.Layout
	if r.shape != nil {
		switch l, err := layoutOf(r.shape, b); {
		case err != nil:
			return wire{}, err
		case layout == LayoutAuto:
			layout = l
		case l != LayoutAuto && l != layout:
			return wire{}, fmt.Errorf("the endpoint's input shape %v is %s, not the %s asked for", r.shape, l, layout)
		}
	}
	if layout == LayoutAuto {
		layout = r.dialect.layout()
	}
	if layout == NHW && b.C != 1 {
		return wire{}, fmt.Errorf("layout NHW drops the channel axis, and the images have %d channels", b.C)
	}
	return wire{layout: layout, input: r.input}, nil
}

// wire is how one call sends its images.
type wire struct {
	layout Layout
	input  string // the input's name
}

// layoutOf matches an input shape (−1 for any size) against b's images.
func layoutOf(shape []int64, b Images) (Layout, error) {
	fits := func(s int64, n int) bool { return s < 0 || s == int64(n) }
	switch len(shape) {
	case 2:
		if fits(shape[1], b.C*b.H*b.W) {
			return Flat, nil
		}
		return "", fmt.Errorf("the endpoint's input shape %v does not take %d×%d×%d = %d values per image", shape, b.C, b.H, b.W, b.C*b.H*b.W)
	case 3:
		if b.C == 1 && fits(shape[1], b.H) && fits(shape[2], b.W) {
			return NHW, nil
		}
		return "", fmt.Errorf("the endpoint's input shape %v does not take %d×%d×%d images", shape, b.C, b.H, b.W)
	case 4:
	default:
		return "", fmt.Errorf("the endpoint's input shape %v is not a batch of images (rank 2, 3 or 4)", shape)
	}
	nchw := fits(shape[1], b.C) && fits(shape[2], b.H) && fits(shape[3], b.W)
	nhwc := fits(shape[1], b.H) && fits(shape[2], b.W) && fits(shape[3], b.C)
	switch {
	case nchw && nhwc:
		return LayoutAuto, nil
	case nchw:
		return NCHW, nil
	case nhwc:
		return NHWC, nil
	}
	return "", fmt.Errorf("the endpoint's input shape %v does not take %d×%d×%d images", shape, b.C, b.H, b.W)
}

// metadata reads the input's name and shape; an endpoint without metadata
// (404, 405, 501) leaves the defaults. Called with r.mu held.
func (r *Remote) metadata(ctx context.Context) error {
	body, err := r.do(ctx, http.MethodGet, r.metaURL, nil, 0)
	var he *HTTPError
	if errors.As(err, &he) && (he.Status == http.StatusNotFound || he.Status == http.StatusMethodNotAllowed || he.Status == http.StatusNotImplemented) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading metadata: %w", err)
	}
	name, shape, err := r.dialect.metadata(r, body)
	if err != nil {
		return err
	}
	if r.input == "" {
		r.input = name
	}
	if len(shape) > 0 {
		r.shape = shape
	}
	return nil
}

// infer sends one batch and decodes its labels.
func (r *Remote) infer(ctx context.Context, w wire, b Images) ([]int64, error) {
	resp, err := r.do(ctx, http.MethodPost, r.inferURL, r.dialect.request(r, w, b), b.N)
	if err != nil {
		return nil, err
	}
	return r.dialect.labels(r, resp, b.N)
}

// HTTPError is an answer with a status other than 2xx.
type HTTPError struct {
	Status int
	// Message is the endpoint's error message, or the start of its body.
	Message    string
	retryAfter time.Duration
}

func (e *HTTPError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// maxRetryAfter is the longest Retry-After that is waited for.
const maxRetryAfter = time.Minute

// do sends one request with retries and returns the body of a 2xx answer.
// images > 0 counts them against the budget on every attempt.
func (r *Remote) do(ctx context.Context, method, target string, body []byte, images int) ([]byte, error) {
	wait := r.o.Backoff
	var last error
	attempts := 1 + max(r.o.Retries, 0)
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			d := wait
			var he *HTTPError
			if errors.As(last, &he) && he.retryAfter > 0 {
				d = he.retryAfter
			}
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			wait = min(2*wait, 10*time.Second)
		}
		if images > 0 {
			if err := r.count(images); err != nil {
				if last != nil {
					return nil, fmt.Errorf("%w (after: %v)", err, last)
				}
				return nil, err
			}
		}
		out, err := r.once(ctx, method, target, body, r.answerLimit(images))
		if err == nil {
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retryable(err) {
			return nil, err
		}
		last = err
	}
	if attempts == 1 {
		return nil, last
	}
	return nil, fmt.Errorf("%d attempts failed, the last: %w", attempts, last)
}

// once is one HTTP exchange.
func (r *Remote) once(ctx context.Context, method, target string, body []byte, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	for k, vs := range r.o.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, fmt.Errorf("no answer within %v: %w", r.o.Timeout, err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("the answer is larger than %d bytes (it says %d)", limit, resp.ContentLength)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no whole answer within %v: %w", r.o.Timeout, err)
		}
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("the answer is larger than %d bytes", limit)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := &HTTPError{Status: resp.StatusCode, Message: errorMessage(data, resp.Header.Get("Content-Type"))}
		if s := resp.Header.Get("Retry-After"); s != "" {
			he.retryAfter = parseRetryAfter(s)
		}
		return nil, he
	}
	return data, nil
}

// Sizes an answer may have: a metadata answer (images == 0), and per
// image, a label or score vector of up to answerClasses classes written
// as JSON with room to spare (answerPerClass bytes a score, answerPerImage
// more an image), above a base for the envelope. Never more than
// MaxResponseBytes.
const (
	maxMetadata    = 4 << 20
	answerBase     = 64 << 10
	answerPerImage = 1 << 10
	answerPerClass = 64
	answerClasses  = 1000 // when the class names are not given
)

// answerLimit is the largest answer taken to a request of images images.
func (r *Remote) answerLimit(images int) int64 {
	if images <= 0 {
		return min(r.o.MaxResponseBytes, maxMetadata)
	}
	k := int64(len(r.o.Classes))
	if k == 0 {
		k = answerClasses
	}
	return min(r.o.MaxResponseBytes, answerBase+int64(images)*(answerPerImage+k*answerPerClass))
}

// maxShown bounds what an error message repeats of an endpoint's answer.
const maxShown = 200

// errorMessage is what an error answer may show of itself: the "error"
// field of a JSON body, cleaned (remoteText) and bounded. Any other body
// is described, never repeated: the guard keeps endpoints off this host
// and its networks, and repeating what a service answered would still
// make the verifier a reader of whatever it is pointed at.
func errorMessage(body []byte, contentType string) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return remoteText(e.Error, maxShown)
	}
	if len(body) == 0 {
		return ""
	}
	ct := remoteText(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]), 60)
	if ct == "" {
		ct = "untyped"
	}
	return fmt.Sprintf("a %d-byte %s answer (not shown)", len(body), ct)
}

// remoteText makes text that came from an endpoint safe to show in a
// message, a log or a terminal: invalid UTF-8, ANSI escape sequences
// (CSI, OSC, and the other ESC forms), C0 and C1 control characters,
// DEL, and Unicode format characters (bidirectional overrides, zero-width
// characters) are dropped, runs of white space become one space, and the
// result is cut to at most n runes, with "…" when cut.
func remoteText(s string, n int) string {
	var b strings.Builder
	runes, space := 0, false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == 0x1b || r == 0x9b:
			i += escapeLen(s[i:], size)
			continue
		case r == utf8.RuneError && size == 1:
		case unicode.IsSpace(r):
			space = b.Len() > 0
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError:
		default:
			if runes == n {
				b.WriteString("…")
				return b.String()
			}
			if space {
				b.WriteByte(' ')
				space = false
				if runes++; runes == n {
					b.WriteString("…")
					return b.String()
				}
			}
			b.WriteRune(r)
			runes++
		}
		i += size
	}
	return b.String()
}

// escapeLen is the length of the escape sequence at the start of s, whose
// introducer (ESC, or the C1 CSI) is size bytes long: CSI sequences run to
// their final byte (0x40–0x7e), OSC, DCS, SOS, PM and APC strings to BEL
// or ST, and any other ESC form is two characters.
func escapeLen(s string, size int) int {
	kind := byte('[')
	i := size
	if s[0] == 0x1b {
		if len(s) < 2 {
			return len(s)
		}
		kind, i = s[1], 2
	}
	switch kind {
	case '[':
		for ; i < len(s); i++ {
			if c := s[i]; c >= 0x40 && c <= 0x7e {
				return i + 1
			}
		}
		return len(s)
	case ']', 'P', 'X', '^', '_':
		for ; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	return i
}

// remoteList shows names that came from an endpoint: each cleaned and
// bounded, at most ten of them.
func remoteList(names []string) string {
	const most = 10
	shown := make([]string, 0, min(len(names), most))
	for _, n := range names[:min(len(names), most)] {
		shown = append(shown, strconv.Quote(remoteText(n, 40)))
	}
	out := strings.Join(shown, ", ")
	if len(names) > most {
		out += fmt.Sprintf(" and %d more", len(names)-most)
	}
	return out
}

// parseRetryAfter reads seconds or an HTTP date, capped at maxRetryAfter.
func parseRetryAfter(s string) time.Duration {
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(s); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

// retryable says whether a failed exchange is safe to repeat: nothing
// reached the model (connection refused), or the endpoint said so (5xx,
// 429). Timeouts are not retried: the model may still be working.
func retryable(err error) bool {
	if isRefused(err) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status >= 500 || he.Status == http.StatusTooManyRequests
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && !op.Timeout()
}

// appendValue writes one pixel value, scaled, as the shortest decimal
// that reads back as the same float32.
func (r *Remote) appendValue(buf []byte, v float32) []byte {
	if r.o.Scale != 1 {
		v = float32(float64(v) * r.o.Scale)
	}
	return strconv.AppendFloat(buf, float64(v), 'g', -1, 32)
}

// axis is one axis of an image on the wire: its size, and the stride
// of its index in the NCHW data.
type axis struct{ size, stride int }

// axes are the wire axes of b's images in the layout.
func axes(l Layout, b Images) []axis {
	c, h, w := axis{b.C, b.H * b.W}, axis{b.H, b.W}, axis{b.W, 1}
	switch l {
	case NHWC:
		return []axis{h, w, c}
	case NHW:
		return []axis{h, w}
	case Flat:
		return []axis{{b.C * b.H * b.W, 1}}
	}
	return []axis{c, h, w}
}

// appendImage writes image i of b nested in the layout ([C][H][W],
// [H][W][C], [H][W] or one vector), or flat in its order when flat is set.
func (r *Remote) appendImage(buf []byte, l Layout, b Images, i int, flat bool) []byte {
	per := b.C * b.H * b.W
	return r.appendNested(buf, b.X[i*per:(i+1)*per], axes(l, b), 0, flat)
}

func (r *Remote) appendNested(buf []byte, x []float32, axes []axis, off int, flat bool) []byte {
	if len(axes) == 0 {
		return r.appendValue(buf, x[off])
	}
	if !flat {
		buf = append(buf, '[')
	}
	for i := 0; i < axes[0].size; i++ {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = r.appendNested(buf, x, axes[1:], off+i*axes[0].stride, flat)
	}
	if !flat {
		buf = append(buf, ']')
	}
	return buf
}
