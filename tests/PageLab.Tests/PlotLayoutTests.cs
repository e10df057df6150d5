// The timeline plot's layout: marker labels stacked so none overlaps another (a label with no room is left
// out; the trace has its text), and more than six VMs drawn as an overview over a grid of small panels.
using System.Buffers.Binary;
using CsCheck;
using PageLab.Report;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class PlotLayoutTests
{
    [Fact]
    public void Placed_labels_never_overlap_in_a_row_and_stay_inside_the_panel()
    {
        Gen.Select(Gen.Double[0, 1000].Array[0, 40], Gen.Double[5, 200], Gen.Int[1, 4]).Sample((xs, width, rows) =>
        {
            List<(double, double)> labels = xs.Order().Select(x => (x, width)).ToList();
            List<LabelSlot> slots = MarkerLabels.Place(labels, 1000, rows);

            Assert.Equal(labels.Count, slots.Count);
            foreach (IGrouping<int, LabelSlot> row in slots.Where(s => s.Shown).GroupBy(s => s.Row))
            {
                Assert.InRange(row.Key, 0, rows - 1);
                LabelSlot[] inRow = row.OrderBy(s => s.StartPx).ToArray();
                for (int i = 1; i < inRow.Length; i++) Assert.True(inRow[i - 1].EndPx + 4 <= inRow[i].StartPx + 1e-9, $"overlap in row {row.Key}");
                Assert.All(inRow, s => Assert.True(s.StartPx >= 0 && s.EndPx <= 1000 + 1e-9, $"{s} outside the panel"));
            }
            // The first label always has a place; a label is left out only when every row is taken there.
            if (slots.Count > 0) Assert.True(slots[0].Shown);
        });
    }

    [Fact]
    public void An_injection_and_its_recovery_at_the_same_tick_get_two_rows()
    {
        List<LabelSlot> slots = MarkerLabels.Place([(500, 90), (500, 60)], 1000, 3);
        Assert.Equal([0, 1], slots.Select(s => s.Row));
    }

    [Fact]
    public void Marker_labels_are_short_words()
    {
        RunEvent Event(RunEventKind kind, string detail) => new() { Tick = 1, Kind = kind, Vm = "a", Detail = detail };
        Assert.Equal("MultiBit error", MarkerLabels.Short(Event(RunEventKind.Injection, "MultiBit in kernel gpage 13 (frame 85) of process 'kernel'")));
        Assert.Equal("recovered", MarkerLabels.Short(Event(RunEventKind.Recovery, "Recovered: gpage 13 rebuilt bit-exact")));
        Assert.Equal("contained", MarkerLabels.Short(Event(RunEventKind.Recovery, "contained: process 'idle' terminated")));
    }

    internal static Scenario Many(int vms, int ticks = 12) => new()
    {
        Name = "many", HostPages = (ulong)(vms * 512), Ticks = ticks, SamplePeriodTicks = 4,
        Vms = Enumerable.Range(0, vms).Select(i => new VmSpec
        {
            Name = $"vm{i}", Pages = 768, Workload = new WorkloadSpec { Kind = i % 2 == 0 ? "idle" : "active", Pages = 400, TouchesPerTick = 40 },
        }).ToList(),
    };

    [Fact]
    public void More_than_six_vms_are_drawn_as_an_overview_over_a_grid_of_small_panels()
    {
        using var dir = new TempDir();
        RunTimeline timeline;
        using (var runner = new ScenarioRunner(Many(10)))
        {
            timeline = RunTimeline.Attach(runner);
            foreach (TickSnapshot _ in runner.Run()) { }
        }
        string path = Path.Combine(dir.Path, "many.png");

        PlotImage image = TimelinePlot.SavePng(timeline, path);

        // 10 VMs in rows of 4: 3 rows of small panels under an overview two rows high; not 10 full panels.
        int rows = 3 + TimelinePlot.OverviewHeightPx / TimelinePlot.SmallPanelHeightPx;
        Assert.Equal((TimelinePlot.DefaultWidthPx, rows * TimelinePlot.SmallPanelHeightPx), (image.WidthPx, image.HeightPx));
        Assert.True(image.HeightPx < 10 * TimelinePlot.DefaultPanelHeightPx / 2);
        byte[] png = File.ReadAllBytes(path);
        Assert.Equal(image.HeightPx, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        Assert.True(png.Length > 20_000, $"a {png.Length}-byte PNG is too small to hold eleven panels");
    }

    [Fact]
    public void Six_vms_still_get_one_full_panel_each()
    {
        using var dir = new TempDir();
        RunTimeline timeline;
        using (var runner = new ScenarioRunner(Many(6, ticks: 4)))
        {
            timeline = RunTimeline.Attach(runner);
            foreach (TickSnapshot _ in runner.Run()) { }
        }
        PlotImage image = TimelinePlot.SavePng(timeline, Path.Combine(dir.Path, "six.png"));
        Assert.Equal(6 * TimelinePlot.DefaultPanelHeightPx, image.HeightPx);
    }
}
