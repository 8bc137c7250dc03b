// Command echo is the lab's HTTP echo server. Every answer names the cluster and pod that
// served it (from the CLUSTER_NAME, POD_NAME, POD_NAMESPACE and POD_IP environment), so a
// cross-cluster check can prove which cluster answered.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	identity := map[string]string{
		"cluster":   os.Getenv("CLUSTER_NAME"),
		"pod":       os.Getenv("POD_NAME"),
		"namespace": os.Getenv("POD_NAMESPACE"),
		"podIP":     os.Getenv("POD_IP"),
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		answer := map[string]string{"path": r.URL.Path, "client": r.RemoteAddr, "host": r.Host}
		for k, v := range identity {
			answer[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Served-By-Cluster", identity["cluster"])
		json.NewEncoder(w).Encode(answer)
	})
	log.Printf("echo for cluster %q listening on %s", identity["cluster"], *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
