package ops_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where Debian's chromium package puts the browser. CI
// installs it (.ci/run); elsewhere the test skips without it.
const chromiumPath = "/usr/bin/chromium"

// TestStatusPageDrill drives region ap's status page in headless Chromium
// against an in-process federation: it sees the three links up, is refused
// with a wrong token, cuts ap–eu with the right one, sees the link turn cut
// on the page (and in the region), then restores it and sees it up again.
// Set ROAMFED_SCREENSHOTS to a directory to keep screenshots.
func TestStatusPageDrill(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no browser at %s (apt-get install chromium); CI installs it", chromiumPath)
	}
	if testing.Short() {
		t.Skip("starts a browser")
	}
	fed := startFederation(t, "ap", "eu", "us")
	page := "http://" + fed["ap"].MetricsAddr() + "/"

	// The defaults are headless, no first run, and no background
	// networking, sync or extensions.
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	shot := func(name string) {
		dir := os.Getenv("ROAMFED_SCREENSHOTS")
		if dir == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
			return
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Log(err)
		}
	}
	result := `document.getElementById('drill-result').textContent`
	// eval polls a JavaScript expression on the page until it returns want.
	eval := func(what, expr, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				shot("failed")
				said, _ := chromedp.Run(ctx, chromedp.Evaluate[string](result))
				t.Fatalf("%s: %q, want %q (drill result on the page: %q)", what, got, want, said)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	linkState := func(id string) string {
		return `(() => { const e = document.querySelector('#map g.link[data-link="` + id + `"]'); return e ? e.getAttribute('data-state') : 'absent'; })()`
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("open %s: %v", page, err)
	}
	for _, id := range []string{"ap:eu", "ap:us", "eu:us"} {
		eval("link "+id+" on the map", linkState(id), "up")
	}
	eval("regions drawn", `String(document.querySelectorAll('#map g.region[data-reachable="true"]').length)`, "3")
	eval("links table counters", `Array.from(document.querySelectorAll('#links thead th')).slice(9, 12).map((th) => th.textContent).join(', ') + ': ' +
		Array.from(document.querySelectorAll('#links tr[data-link="ap:eu"] td')).slice(9, 12).map((td) => td.textContent).join(' ')`,
		"rate refused, dir refused, integrity failures: 0 0 0")
	shot("1-up")

	// A wrong token is refused and cuts nothing.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
		chromedp.SetValue(chromedp.ID("drill-link"), "ap:eu"),
		chromedp.Click(chromedp.ID("drill-cut")),
	); err != nil {
		t.Fatal(err)
	}
	eval("answer to a wrong token", `(`+result+`).slice(0, 3)`, "401")
	if fed["ap"].Roaming().Mesh().IsCut("eu") {
		t.Fatal("a drill with a wrong token cut the link")
	}

	// The right token, typed over the wrong one, cuts the link.
	// (chromedp.Clear resets the attribute, not what was typed.)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('token').value = ''`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.SendKeys(chromedp.ID("drill-reason"), "browser test"),
		chromedp.Click(chromedp.ID("drill-cut")),
	); err != nil {
		t.Fatal(err)
	}
	eval("link ap:eu after the cut", linkState("ap:eu"), "cut")
	eval("links table row", `document.querySelector('#links tr[data-link="ap:eu"]').dataset.state`, "cut")
	eval("other links", linkState("ap:us")+` + ' ' + `+linkState("eu:us"), "up up")
	said, err := chromedp.Run(ctx, chromedp.Evaluate[string](result))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(said, "cut ap-eu") {
		t.Errorf("drill result %q", said)
	}
	if !fed["ap"].Roaming().Mesh().IsCut("eu") || !fed["eu"].Roaming().Mesh().IsCut("ap") {
		t.Error("the page said cut, but the regions' links are not")
	}
	// The token stays in the tab's session storage only.
	eval("token kept in sessionStorage", `sessionStorage.getItem('roamfed.admin-token')`, token)
	eval("token not in localStorage", `String(localStorage.length)`, "0")
	shot("2-cut")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("drill-restore"))); err != nil {
		t.Fatal(err)
	}
	eval("link ap:eu after the restore", linkState("ap:eu"), "up")
	shot("3-restored")
}
