// Command ferretdb-runner serves FerretDB v1 (SQLite backend) on loopback for local runs and tests.
//
// It embeds FerretDB as a library because the `go install`-built binary panics on a missing version file.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only with -pprof-addr: where FerretDB spends its CPU (go tool pprof)
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	handler := flag.String("handler", "sqlite", "backend handler: sqlite or postgresql")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite directory URL (must end in /)")
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL URL")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	pprofAddr := flag.String("pprof-addr", "", "serve Go's profiler on this loopback address (empty: off)")
	flag.Parse()

	if *pprofAddr != "" {
		go func() { log.Println(http.ListenAndServe(*pprofAddr, nil)) }()
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		log.Fatalf("bad --log-level: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:        logger,
		Handler:       *handler,
		SQLiteURL:     *sqliteURL,
		PostgreSQLURL: *postgresqlURL,
	})
	if err != nil {
		log.Fatalf("ferretdb: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	logger.Info("ferretdb-runner ready", "uri", f.MongoDBURI())
	f.Run(ctx)
}
