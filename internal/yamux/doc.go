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
//   - A stream's Write writes its data frames to the connection itself,
//     taking a turn on it (Session.writeFrame), instead of handing each
//     frame to the send loop, waiting for it, and having the send loop
//     copy the body. A data write the connection holds up now ends when
//     the connection takes it or the session closes, instead of returning
//     ErrConnectionWriteTimeout while the frame stays queued.
//   - No send loop goroutine: control frames (window updates, pings,
//     FIN, RST, go away) wait in a queue that whoever holds the write
//     turn writes before giving it up, or a goroutine started only when
//     the turn is free (Session.kick). Their waits keep upstream's bounds.
//     An idle session runs one goroutine, its receive loop.
//   - A stream's received data waits in a queue of pooled chunks
//     (recvqueue.go) instead of a bytes.Buffer: the receive loop reads a
//     body that is not yet buffered outside the stream's receive lock,
//     queueing each chunk as it fills, so a Read copies out meanwhile
//     instead of waiting for the body's system calls; and a drained
//     stream holds no buffer (upstream's stayed as large as the largest
//     burst, until Shrink, which this copy no longer has).
//   - A Read's window update is queued and not waited for (upstream the
//     Read waited until the send loop had written it, and the stream was
//     not drained meanwhile): with 1 MiB writes on loopback this took one
//     stream from 60% to about 100% of raw TCP (recvqueue_test.go tests
//     both changes). When the control queue is full the Read waits its
//     turn, as upstream (TestWindowUpdateWaitsWhenTheQueueIsFull).
//   - Config.AcceptNotify: a hook called when a peer's stream is queued
//     for Accept, so that no goroutine need wait in Accept for a link's
//     whole life.
//   - Stream.SendWindow (window.go): how much a Write can send without
//     waiting, so that a writer that must not wait for the peer (the
//     mesh's Send writing a message itself) can tell beforehand.
//   - A stream's Read or Write blocked when its session shuts down fails
//     with ErrSessionShutdown (a Read after what is buffered) instead of
//     looping, a new timer each turn, until the session has closed its
//     streams (hashicorp/yamux#176).
package yamux
