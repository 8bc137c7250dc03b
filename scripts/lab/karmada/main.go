// Command karmada is one multi-call binary for the lab's Karmada control plane: it links the
// shared code once and dispatches on the name it is invoked as (a symlink per component), or on
// its first argument: `karmada karmada-scheduler --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	controllerruntime "sigs.k8s.io/controller-runtime"

	aggregated "github.com/karmada-io/karmada/cmd/aggregated-apiserver/app"
	controllermanager "github.com/karmada-io/karmada/cmd/controller-manager/app"
	scheduler "github.com/karmada-io/karmada/cmd/scheduler/app"
	webhook "github.com/karmada-io/karmada/cmd/webhook/app"
)

var commands = map[string]func(context.Context) *cobra.Command{
	"karmada-aggregated-apiserver": aggregated.NewAggregatedApiserverCommand,
	"karmada-controller-manager":   controllermanager.NewControllerManagerCommand,
	"karmada-scheduler":            func(ctx context.Context) *cobra.Command { return scheduler.NewSchedulerCommand(ctx) },
	"karmada-webhook":              webhook.NewWebhookCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	newCommand, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: karmada {karmada-aggregated-apiserver|karmada-controller-manager|karmada-scheduler|karmada-webhook} [flags]\n")
		os.Exit(2)
	}
	code := cli.Run(newCommand(controllerruntime.SetupSignalHandler()))
	logs.FlushLogs()
	os.Exit(code)
}
