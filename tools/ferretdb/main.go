// Command onebox-ferretdb runs FerretDB v1 embedded: the MongoDB wire protocol
// over SQLite. It is onebox's default database, so that `make run` and the test
// suite need no MongoDB installation. It imports FerretDB's embeddable package
// rather than installing FerretDB's own command, whose version file is not part
// of the Go module and which panics at start when built that way.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", ".data/ferretdb", "directory for the SQLite databases")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "onebox-ferretdb: bad -log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "onebox-ferretdb: cannot create %s: %v\n", *dir, err)
		os.Exit(1)
	}
	// FerretDB's SQLite URI names a directory and must end with a slash.
	// In-memory SQLite (mode=memory) is not offered: with it, findAndModify
	// never answers, so tests use a directory on tmpfs instead.
	uri := "file:" + *dir + "/"

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: uri,
		Logger:    logger,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "onebox-ferretdb: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The line below is what callers wait for to know the port is open.
	fmt.Printf("onebox-ferretdb listening on %s (%s)\n", *listen, uri)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "onebox-ferretdb: %v\n", err)
		os.Exit(1)
	}
}
