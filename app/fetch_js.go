//go:build js && wasm

package app

import (
	"context"
	"errors"
	"syscall/js"
)

// send makes one request with the browser's fetch and returns the answer's
// status and body. The browser app goes through fetch itself, not through
// net/http's Client: a Client links net/http's whole Transport (dialing,
// HTTP/2, crypto/tls and crypto/x509) into app.wasm even though in a
// browser it ends in the same fetch call, which cost about 0.5 MB of the
// gzipped app.
func send(ctx context.Context, method, url, contentType string, body []byte) (int, []byte, error) {
	global := js.Global()
	abort := global.Get("AbortController").New()
	opt := global.Get("Object").New()
	opt.Set("method", method)
	opt.Set("credentials", "same-origin")
	opt.Set("signal", abort.Get("signal"))
	headers := global.Get("Headers").New()
	headers.Call("append", "Accept", "application/json")
	if contentType != "" {
		headers.Call("append", "Content-Type", contentType)
	}
	opt.Set("headers", headers)
	if len(body) > 0 {
		buf := global.Get("Uint8Array").New(len(body))
		js.CopyBytesToJS(buf, body)
		opt.Set("body", buf)
	}
	resp, err := await(ctx, abort, global.Call("fetch", url, opt))
	if err != nil {
		return 0, nil, err
	}
	status := resp.Get("status").Int()
	ab, err := await(ctx, abort, resp.Call("arrayBuffer"))
	if err != nil {
		return 0, nil, err
	}
	arr := global.Get("Uint8Array").New(ab)
	b := make([]byte, arr.Get("length").Int())
	js.CopyBytesToGo(b, arr)
	return status, b, nil
}

// await waits for promise to settle, or for ctx to end (then it aborts the
// request and waits for the promise's rejection, as net/http does).
func await(ctx context.Context, abort, promise js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	var ok, fail js.Func
	ok = js.FuncOf(func(_ js.Value, args []js.Value) any {
		ok.Release()
		fail.Release()
		ch <- result{v: args[0]}
		return nil
	})
	fail = js.FuncOf(func(_ js.Value, args []js.Value) any {
		ok.Release()
		fail.Release()
		msg := "fetch failed"
		if len(args) > 0 && !args[0].IsUndefined() && !args[0].IsNull() {
			msg = "fetch failed: " + args[0].Call("toString").String()
		}
		ch <- result{err: errors.New(msg)}
		return nil
	})
	promise.Call("then", ok, fail)
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		abort.Call("abort")
		<-ch
		return js.Value{}, ctx.Err()
	}
}
