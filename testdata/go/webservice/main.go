// webservice: a small JSON web service, the Go program of the README's image-size story (benchmarks/docker_story.py).
//
//	webservice                 serve on :8080 (or $PORT)
//	webservice --listen ADDR   serve on ADDR
//	webservice --version       print the version and exit
//	webservice --get PATH      serve on a free loopback port, request PATH from itself, print the answer, exit
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"
)

const version = "1.0.0"

func handler() http.Handler {
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"service":  "webservice",
			"version":  version,
			"path":     r.URL.Path,
			"go":       runtime.Version(),
			"uptime_s": int(time.Since(started).Seconds()),
		})
	})
	return mux
}

// get serves on a loopback port and fetches path from itself: a self-test that needs no network.
func get(path string) error {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := &http.Server{Handler: handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }()
	defer server.Close()
	client := &http.Client{Timeout: 5 * time.Second}
	response, err := client.Get("http://" + listener.Addr().String() + path)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s", response.Status, body)
	return nil
}

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	listen := flag.String("listen", "", "address to serve on (default :$PORT, or :8080)")
	getPath := flag.String("get", "", "request this path from a server on a loopback port, print the answer, exit")
	flag.Parse()
	switch {
	case *showVersion:
		fmt.Println("webservice " + version)
	case *getPath != "":
		if err := get(*getPath); err != nil {
			fmt.Fprintln(os.Stderr, "webservice:", err)
			os.Exit(1)
		}
	default:
		address := *listen
		if address == "" {
			port := os.Getenv("PORT")
			if port == "" {
				port = "8080"
			}
			address = ":" + port
		}
		server := &http.Server{Addr: address, Handler: handler(), ReadHeaderTimeout: 5 * time.Second}
		log.Printf("webservice %s listening on %s", version, address)
		log.Fatal(server.ListenAndServe())
	}
}
