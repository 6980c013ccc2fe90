# One migration's progress against time, godwit and QEMU (the median run of
# each): transferred (solid) and remaining (dashed) MiB, from query-migrate
# sampled every 50 ms (remaining is left out before the first dirty sync,
# where it means nothing). Variables: data, out, plottitle, gtitle, qtitle,
# has_godwit (0: QEMU alone). data: two blocks (index 0 godwit, 1 QEMU) of
# "ms transferred_MiB remaining_MiB".
set terminal pngcairo size 800,420 font "sans,10"
set output out
set title plottitle
set xlabel "ms since migrate"
set ylabel "MiB"
set grid
set key outside bottom center horizontal
set yrange [0:*]
set xrange [0:*]
set datafile missing NaN
qemu = "''   index 1 using 1:2 with linespoints pt 5 ps 0.5 lw 2 lc rgb '#d62728' title qtitle.' transferred', ''   index 1 using 1:3 with linespoints pt 5 ps 0.5 lw 2 dt 2 lc rgb '#d62728' title qtitle.' remaining'"
if (has_godwit) {
    plot data index 0 using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb "#1f77b4" title gtitle." transferred", \
         ''   index 0 using 1:3 with linespoints pt 7 ps 0.5 lw 2 dt 2 lc rgb "#1f77b4" title gtitle." remaining", \
         @qemu
} else {
    plot data index 1 using 1:2 with linespoints pt 5 ps 0.5 lw 2 lc rgb "#d62728" title qtitle." transferred", \
         ''   index 1 using 1:3 with linespoints pt 5 ps 0.5 lw 2 dt 2 lc rgb "#d62728" title qtitle." remaining"
}
