# The convergence map for one downtime limit: left, time to complete (a run
# cancelled at the timeout is drawn at the timeout, open symbol); right, the
# guest's progress during the migration as a share of the rate it asked for.
# Variables: data, out, plottitle, timeout. data: one block per
# configuration (index 0..4: godwit, godwit-ac, godwit-dl, qemu, qemu-ac),
# rows "D total_s_or_NaN cancelled_at_or_NaN progress_percent".
set terminal pngcairo size 1000,420 font "sans,10"
set output out
set datafile missing NaN
set multiplot layout 1,2 title plottitle
set grid
set xlabel "guest dirty rate D (MiB/s)"
set logscale x 2
set key top left font ",8"
set ylabel "seconds to complete (open: cancelled)"
set yrange [0:timeout * 1.1]
plot for [i=0:4] data index i using 1:2 with linespoints lw 2 pt 7 lc i+1 title columnheader(1), \
     for [i=0:4] data index i using 1:3 with points pt 6 ps 1.5 lc i+1 notitle
set ylabel "guest progress (% of its rate)"
set yrange [0:110]
plot for [i=0:4] data index i using 1:4 with linespoints lw 2 pt 7 lc i+1 title columnheader(1)
unset multiplot
