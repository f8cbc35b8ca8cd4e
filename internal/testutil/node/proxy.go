package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runProxy is the harness's other mode (Config.Proxy): a TCP proxy that
// forwards every connection on listen to target, holding each chunk back
// for delay in each direction (the kernel has no netem). It prints a
// "start" line with its address and runs until standard input closes or a
// signal comes.
func runProxy(out *printer, spec string) error {
	var listen, target string
	var delay time.Duration
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "listen":
			listen = v
		case "to":
			target = v
		case "delay":
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("-proxy delay: %w", err)
			}
			delay = d
		default:
			return fmt.Errorf("-proxy %q: want listen=ADDR,to=ADDR,delay=D", spec)
		}
	}
	if listen == "" || target == "" {
		return fmt.Errorf("-proxy %q: want listen=ADDR,to=ADDR,delay=D", spec)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	out.print(Event{Ev: "start", Addrs: []string{ln.Addr().String()}})

	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			if !track(c) || !track(up) {
				c.Close()
				up.Close()
				return
			}
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(up, c, delay) }()
			go func() { defer wg.Done(); delayCopy(c, up, delay) }()
		}
	}()

	waitForEnd()
	ln.Close()
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	conns = nil
	mu.Unlock()
	wg.Wait()
	return nil
}

// chunk is bytes read at a time.
type chunk struct {
	b  []byte
	at time.Time
}

// delayCopy copies src to dst, each chunk written delay after it was
// read, in order. When either side ends, both are closed.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			time.Sleep(time.Until(c.at.Add(delay)))
			if _, err := dst.Write(c.b); err != nil {
				src.Close()
				for range q {
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now()}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

// waitForEnd returns on SIGINT or SIGTERM, or when standard input ends
// (the test that started the process closed it, or died): how the
// harness's helper processes (proxy, NATS server) know to stop.
func waitForEnd() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	eof := make(chan struct{})
	go func() { // ends with standard input; never waited for
		io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-stop:
	case <-eof:
	}
}
