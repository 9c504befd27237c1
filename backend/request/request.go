// Package request turns the API's job requests (package shared) into the
// backend's configurations: one converter per job kind, used alike by the
// CLI (whose flags build a request), the server and the demo, so that a
// default lives in one place and the same request makes the same job
// wherever it is made.
//
// A request's zero value takes the default, except where zero means
// something of its own (no ensemble dropout, keep every example): those
// fields are pointers, and nil takes the default. A setting out of range
// is an error naming the field as the API spells it.
package request
