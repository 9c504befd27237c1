// Package onnxpb holds the Go protobuf types of the ONNX model format
// (ModelProto, GraphProto, NodeProto, TensorProto, ...), generated from
// onnx.proto3 of ONNX 1.12.0 (IR version 8). The schema and the generated
// code are Apache-2.0 (see LICENSE and README.md); nothing here is written
// by hand except this file.
//
// Regenerate with protoc on PATH (Debian: apt-get install protobuf-compiler);
// the Go plugin is built from the google.golang.org/protobuf version that
// go.mod pins, so the output matches the runtime the module links.
package onnxpb

//go:generate go build -o protoc-gen-go.tmp google.golang.org/protobuf/cmd/protoc-gen-go
//go:generate protoc --plugin=protoc-gen-go=protoc-gen-go.tmp --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto3=github.com/conferral/conferral/backend/onnx/onnxpb onnx.proto3
//go:generate rm protoc-gen-go.tmp
