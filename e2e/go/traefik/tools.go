//go:build tools

// Package tools pins Traefik's command in this wrapper module, so `go mod tidy` keeps
// its requirements and `go build` finds it (e2e/go/traefik.sh).
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
