// Package protocol holds, one package each, the REST dialects of
// prediction endpoints that Conferral speaks as a client (suspect.Remote
// queries a suspect's endpoint) and as a server (predict.Handler serves a
// model): kserve (the Open Inference Protocol, KServe v2) and tfserving
// (TensorFlow Serving). Each package has the typed messages and the paths
// both sides use, so that a dialect is written down once; adding one is a
// package of its own beside them.
package protocol
