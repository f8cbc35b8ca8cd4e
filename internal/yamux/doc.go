// Copyright (c) 2014 HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0

// Package yamux is tallship's copy of github.com/hashicorp/yamux v0.1.2
// (Mozilla Public License 2.0, in LICENSE beside this file; spec.md is the
// wire protocol, unchanged: a tallship link still speaks yamux to any
// yamux peer).
//
// It is a fork only because the one-stream throughput target of
// docs/benchmarks.md could not be met around yamux: each Stream.Write
// handed its frame to the session's send loop goroutine, waited for it, and
// the send loop copied the body before writing it.
//
// What tallship changed, each marked "tallship:" where it is:
//
//   - (none yet: this is the unchanged copy)
package yamux
