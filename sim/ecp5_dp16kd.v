// Behavioural model of the Lattice ECP5 DP16KD (sysMEM 18 kbit true dual-port block RAM), for
// simulating Yosys' ECP5 netlists (psconv/sim/engine_netlist.py). Written for psconv from the
// documented behaviour of the primitive (ECP5 Memory Usage Guide, TN1264): Yosys' ECP5 cell
// library has DP16KD only as a blackbox whose outputs nothing drives.
//
// Storage: 1024 words of 18 bits. INITVAL_00..INITVAL_3F give 16 words each, word 16*xx + i in
// bits [20*i +: 18] of INITVAL_xx (bits 18-19 of each 20-bit slot are padding).
//
// Per port (A and B alike), DATA_WIDTH and the address bits it uses:
//   18: AD[13:4] picks the word; AD1/AD0 are the write enables of bits [17:9]/[8:0] (bytes);
//    9: AD[13:3]: AD3 picks bits [17:9] (1) or [8:0] (0) of word AD[13:4];
//    4: AD[13:2]: nibble AD[3:2] = 0..3 at bits [3:0], [7:4], [12:9], [16:13];
//    2: AD[13:1]: pair AD[3:1] = 0..7 at bits 2k (k < 4) or 2k + 1 (k >= 4);
//    1: AD[13:0]: bit AD[3:0] = k at bit k (k < 8) or k + 1 (k >= 8);
//       (the narrow widths skip bits 8 and 17, the ninth bit of each byte);
//   36 (the pseudo-dual-port x36 that PDPW16KD becomes): port A only writes, port B only reads.
//       AD[13:5] picks words 2k ({DIA, DOA}: bits [17:0]) and 2k + 1 ({DIB, DOB}: bits [35:18]);
//       a DATA_WIDTH_A of 36 writes {DIB, DIA} with ADA3..ADA0 as the enables of its four 9-bit
//       bytes (port B then writes nothing); a DATA_WIDTH_B of 36 reads into {DOB, DOA} (port A's
//       own read data is then not visible).
// A port acts on the rising edge of its clock (CLKxMUX "CLKx"; "INV": the falling edge) when CEx
// is high and {CSx2, CSx1, CSx0} equals CSDECODE_x; WEx high writes (for x18/x36 only the
// enabled bytes), else it reads. Its output latch then takes, per WRITEMODE_x:
//   NORMAL: a read's data; a write leaves the latch as it was;
//   WRITETHROUGH: a read's data; on a write, the addressed data after the write;
//   READBEFOREWRITE: the addressed data before the write (a read's data when not writing).
// A read on one port of data the other port writes on the same edge gives the old data.
// REGMODE_x "NOREG": DOx is the latch; "OUTREG": DOx is a register loading the latch on the
// clock edge when OCEx is high. RSTx clears the latch and the output register: RESETMODE "SYNC"
// on the clock edge (whatever CEx/OCEx), "ASYNC" at once and while it is high. Power-up: latches
// and output registers 0 (GSR is not modelled; ASYNC_RESET_RELEASE only changes timing).
//
// Checked against Amaranth's memories by tests/hw/test_hw_ecp5_dp16kd.py (the configurations
// synth_ecp5 makes of them: every width, the three write modes, clock enables, byte enables,
// initial contents; among them every configuration of the ULX3S engines' 151 (85F) and 67 (25F)
// block RAMs: x36 pseudo-dual-port, and x18, x9, x2 with port A writing and port B reading). Documentation only, not checked against a reference: REGMODE "OUTREG",
// OCE, RST, CSDECODE other than "0b000" (synth_ecp5 never uses them). Any other parameter value,
// and a write on port B while port A is x36, stop the model with an error.

module DP16KD (
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    input CEA, OCEA, CLKA, WEA, RSTA,
    input CSA2, CSA1, CSA0,
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    input CEB, OCEB, CLKB, WEB, RSTB,
    input CSB2, CSB1, CSB0,
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter CLKAMUX = "CLKA";
    parameter CLKBMUX = "CLKB";
    parameter GSR = "ENABLED";
    parameter [319:0] INITVAL_00 = 320'h0, INITVAL_01 = 320'h0, INITVAL_02 = 320'h0, INITVAL_03 = 320'h0;
    parameter [319:0] INITVAL_04 = 320'h0, INITVAL_05 = 320'h0, INITVAL_06 = 320'h0, INITVAL_07 = 320'h0;
    parameter [319:0] INITVAL_08 = 320'h0, INITVAL_09 = 320'h0, INITVAL_0A = 320'h0, INITVAL_0B = 320'h0;
    parameter [319:0] INITVAL_0C = 320'h0, INITVAL_0D = 320'h0, INITVAL_0E = 320'h0, INITVAL_0F = 320'h0;
    parameter [319:0] INITVAL_10 = 320'h0, INITVAL_11 = 320'h0, INITVAL_12 = 320'h0, INITVAL_13 = 320'h0;
    parameter [319:0] INITVAL_14 = 320'h0, INITVAL_15 = 320'h0, INITVAL_16 = 320'h0, INITVAL_17 = 320'h0;
    parameter [319:0] INITVAL_18 = 320'h0, INITVAL_19 = 320'h0, INITVAL_1A = 320'h0, INITVAL_1B = 320'h0;
    parameter [319:0] INITVAL_1C = 320'h0, INITVAL_1D = 320'h0, INITVAL_1E = 320'h0, INITVAL_1F = 320'h0;
    parameter [319:0] INITVAL_20 = 320'h0, INITVAL_21 = 320'h0, INITVAL_22 = 320'h0, INITVAL_23 = 320'h0;
    parameter [319:0] INITVAL_24 = 320'h0, INITVAL_25 = 320'h0, INITVAL_26 = 320'h0, INITVAL_27 = 320'h0;
    parameter [319:0] INITVAL_28 = 320'h0, INITVAL_29 = 320'h0, INITVAL_2A = 320'h0, INITVAL_2B = 320'h0;
    parameter [319:0] INITVAL_2C = 320'h0, INITVAL_2D = 320'h0, INITVAL_2E = 320'h0, INITVAL_2F = 320'h0;
    parameter [319:0] INITVAL_30 = 320'h0, INITVAL_31 = 320'h0, INITVAL_32 = 320'h0, INITVAL_33 = 320'h0;
    parameter [319:0] INITVAL_34 = 320'h0, INITVAL_35 = 320'h0, INITVAL_36 = 320'h0, INITVAL_37 = 320'h0;
    parameter [319:0] INITVAL_38 = 320'h0, INITVAL_39 = 320'h0, INITVAL_3A = 320'h0, INITVAL_3B = 320'h0;
    parameter [319:0] INITVAL_3C = 320'h0, INITVAL_3D = 320'h0, INITVAL_3E = 320'h0, INITVAL_3F = 320'h0;

    function automatic integer width_ok(input integer w);
        width_ok = w == 1 || w == 2 || w == 4 || w == 9 || w == 18 || w == 36;
    endfunction
    function automatic integer mode_ok(input [8*15-1:0] m);
        mode_ok = m == "NORMAL" || m == "WRITETHROUGH" || m == "READBEFOREWRITE";
    endfunction
    function automatic integer csdecode_ok(input [8*5-1:0] c);
        csdecode_ok = c[39:24] == "0b" && (c[23:16] == "0" || c[23:16] == "1")
                      && (c[15:8] == "0" || c[15:8] == "1") && (c[7:0] == "0" || c[7:0] == "1");
    endfunction

    generate
        if (!width_ok(DATA_WIDTH_A) || !width_ok(DATA_WIDTH_B))
            $fatal(1, "DP16KD model: DATA_WIDTH_A/B must be 1, 2, 4, 9, 18 or 36");
        if (!mode_ok(WRITEMODE_A) || !mode_ok(WRITEMODE_B))
            $fatal(1, "DP16KD model: WRITEMODE_A/B must be NORMAL, WRITETHROUGH or READBEFOREWRITE");
        if ((REGMODE_A != "NOREG" && REGMODE_A != "OUTREG") || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG"))
            $fatal(1, "DP16KD model: REGMODE_A/B must be NOREG or OUTREG");
        if (RESETMODE != "SYNC" && RESETMODE != "ASYNC")
            $fatal(1, "DP16KD model: RESETMODE must be SYNC or ASYNC");
        if (ASYNC_RESET_RELEASE != "SYNC" && ASYNC_RESET_RELEASE != "ASYNC")
            $fatal(1, "DP16KD model: ASYNC_RESET_RELEASE must be SYNC or ASYNC");
        if (!csdecode_ok(CSDECODE_A) || !csdecode_ok(CSDECODE_B))
            $fatal(1, "DP16KD model: CSDECODE_A/B must be \"0b\" and three binary digits");
        if ((CLKAMUX != "CLKA" && CLKAMUX != "INV") || (CLKBMUX != "CLKB" && CLKBMUX != "INV"))
            $fatal(1, "DP16KD model: CLKAMUX/CLKBMUX must be CLKA/CLKB or INV");
        if (GSR != "ENABLED" && GSR != "DISABLED" && GSR != "AUTO")
            $fatal(1, "DP16KD model: GSR must be ENABLED, DISABLED or AUTO");
    endgenerate

    localparam [2:0] CS_A = {CSDECODE_A[23:16] == "1", CSDECODE_A[15:8] == "1", CSDECODE_A[7:0] == "1"};
    localparam [2:0] CS_B = {CSDECODE_B[23:16] == "1", CSDECODE_B[15:8] == "1", CSDECODE_B[7:0] == "1"};

    wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};

    reg [17:0] mem [0:1023];
    wire [319:0] initval [0:63];
    assign initval[8'h00] = INITVAL_00; assign initval[8'h01] = INITVAL_01; assign initval[8'h02] = INITVAL_02; assign initval[8'h03] = INITVAL_03;
    assign initval[8'h04] = INITVAL_04; assign initval[8'h05] = INITVAL_05; assign initval[8'h06] = INITVAL_06; assign initval[8'h07] = INITVAL_07;
    assign initval[8'h08] = INITVAL_08; assign initval[8'h09] = INITVAL_09; assign initval[8'h0A] = INITVAL_0A; assign initval[8'h0B] = INITVAL_0B;
    assign initval[8'h0C] = INITVAL_0C; assign initval[8'h0D] = INITVAL_0D; assign initval[8'h0E] = INITVAL_0E; assign initval[8'h0F] = INITVAL_0F;
    assign initval[8'h10] = INITVAL_10; assign initval[8'h11] = INITVAL_11; assign initval[8'h12] = INITVAL_12; assign initval[8'h13] = INITVAL_13;
    assign initval[8'h14] = INITVAL_14; assign initval[8'h15] = INITVAL_15; assign initval[8'h16] = INITVAL_16; assign initval[8'h17] = INITVAL_17;
    assign initval[8'h18] = INITVAL_18; assign initval[8'h19] = INITVAL_19; assign initval[8'h1A] = INITVAL_1A; assign initval[8'h1B] = INITVAL_1B;
    assign initval[8'h1C] = INITVAL_1C; assign initval[8'h1D] = INITVAL_1D; assign initval[8'h1E] = INITVAL_1E; assign initval[8'h1F] = INITVAL_1F;
    assign initval[8'h20] = INITVAL_20; assign initval[8'h21] = INITVAL_21; assign initval[8'h22] = INITVAL_22; assign initval[8'h23] = INITVAL_23;
    assign initval[8'h24] = INITVAL_24; assign initval[8'h25] = INITVAL_25; assign initval[8'h26] = INITVAL_26; assign initval[8'h27] = INITVAL_27;
    assign initval[8'h28] = INITVAL_28; assign initval[8'h29] = INITVAL_29; assign initval[8'h2A] = INITVAL_2A; assign initval[8'h2B] = INITVAL_2B;
    assign initval[8'h2C] = INITVAL_2C; assign initval[8'h2D] = INITVAL_2D; assign initval[8'h2E] = INITVAL_2E; assign initval[8'h2F] = INITVAL_2F;
    assign initval[8'h30] = INITVAL_30; assign initval[8'h31] = INITVAL_31; assign initval[8'h32] = INITVAL_32; assign initval[8'h33] = INITVAL_33;
    assign initval[8'h34] = INITVAL_34; assign initval[8'h35] = INITVAL_35; assign initval[8'h36] = INITVAL_36; assign initval[8'h37] = INITVAL_37;
    assign initval[8'h38] = INITVAL_38; assign initval[8'h39] = INITVAL_39; assign initval[8'h3A] = INITVAL_3A; assign initval[8'h3B] = INITVAL_3B;
    assign initval[8'h3C] = INITVAL_3C; assign initval[8'h3D] = INITVAL_3D; assign initval[8'h3E] = INITVAL_3E; assign initval[8'h3F] = INITVAL_3F;

    integer word;
    initial begin
        for (word = 0; word < 1024; word = word + 1)
            mem[word] = initval[word / 16][20 * (word % 16) +: 18];
    end

    // Where a DATA_WIDTH-wide access at address ad lies: the 18-bit word and the mask of its bits.
    function automatic [9:0] word_of(input integer w, input [13:0] ad);
        word_of = ad[13:4];
    endfunction
    function automatic [17:0] mask_of(input integer w, input [13:0] ad);
        integer k;
        begin
            case (w)
                1: begin k = ad[3:0]; mask_of = 18'b1 << (k + (k >= 8 ? 1 : 0)); end
                2: begin k = ad[3:1]; mask_of = 18'b11 << (2 * k + (k >= 4 ? 1 : 0)); end
                4: begin k = ad[3:2]; mask_of = 18'b1111 << (4 * k + (k >= 2 ? 1 : 0)); end
                9: mask_of = ad[3] ? 18'h3FE00 : 18'h001FF;
                default: mask_of = {{9{ad[1]}}, {9{ad[0]}}};   // 18: byte enables AD1, AD0
            endcase
        end
    endfunction
    // The accessed bits moved to the bottom (a read) / data placed at the access (a write).
    function automatic [17:0] extract(input integer w, input [13:0] ad, input [17:0] data);
        integer k;
        begin
            case (w)
                1: begin k = ad[3:0]; extract = {17'b0, data[k + (k >= 8 ? 1 : 0)]}; end
                2: begin k = ad[3:1]; extract = {16'b0, data[2 * k + (k >= 4 ? 1 : 0) +: 2]}; end
                4: begin k = ad[3:2]; extract = {14'b0, data[4 * k + (k >= 2 ? 1 : 0) +: 4]}; end
                9: extract = {9'b0, ad[3] ? data[17:9] : data[8:0]};
                default: extract = data;
            endcase
        end
    endfunction
    function automatic [17:0] place(input integer w, input [13:0] ad, input [17:0] data);
        integer k;
        begin
            case (w)
                1: begin k = ad[3:0]; place = {17'b0, data[0]} << (k + (k >= 8 ? 1 : 0)); end
                2: begin k = ad[3:1]; place = {16'b0, data[1:0]} << (2 * k + (k >= 4 ? 1 : 0)); end
                4: begin k = ad[3:2]; place = {14'b0, data[3:0]} << (4 * k + (k >= 2 ? 1 : 0)); end
                9: place = ad[3] ? {data[8:0], 9'b0} : {9'b0, data[8:0]};
                default: place = data;
            endcase
        end
    endfunction

    localparam A36 = DATA_WIDTH_A == 36;
    localparam B36 = DATA_WIDTH_B == 36;
    wire clk_a = CLKAMUX == "INV" ? ~CLKA : CLKA;
    wire clk_b = CLKBMUX == "INV" ? ~CLKB : CLKB;
    wire sel_a = CEA && {CSA2, CSA1, CSA0} == CS_A;
    wire sel_b = CEB && {CSB2, CSB1, CSB0} == CS_B;
    wire async_reset = RESETMODE == "ASYNC";

    reg [17:0] latch_a = 18'b0, latch_b = 18'b0, latch_b_low = 18'b0;
    reg [17:0] out_a = 18'b0, out_b = 18'b0, out_b_low = 18'b0;

    // Port A. Memory writes are nonblocking and bit by bit: a read on the other port on the same
    // edge sees the old word, and the two ports' writes to different bits of one word both land
    // (two writes to one bit on one edge, undefined in the hardware: the later block's).
    reg [17:0] old_a, new_a, mask_a, mask_a_hi;
    integer bit_a;
    always @(posedge clk_a or posedge (async_reset & RSTA)) begin
        if (RSTA) begin
            latch_a <= 18'b0;
            out_a <= 18'b0;
        end else begin
            if (REGMODE_A == "OUTREG" && OCEA)
                out_a <= latch_a;
            if (sel_a) begin
                if (A36) begin
                    // x36 write: {DIB, DIA} to words 2k + 1, 2k; ADA3..ADA0 enable the bytes
                    if (WEA) begin
                        mask_a = {{9{ada[1]}}, {9{ada[0]}}};
                        mask_a_hi = {{9{ada[3]}}, {9{ada[2]}}};
                        for (bit_a = 0; bit_a < 18; bit_a = bit_a + 1) begin
                            if (mask_a[bit_a]) mem[{ada[13:5], 1'b0}][bit_a] <= dia[bit_a];
                            if (mask_a_hi[bit_a]) mem[{ada[13:5], 1'b1}][bit_a] <= dib[bit_a];
                        end
                    end
                end else begin
                    old_a = mem[word_of(DATA_WIDTH_A, ada)];
                    mask_a = mask_of(DATA_WIDTH_A, ada);
                    new_a = (old_a & ~mask_a) | (place(DATA_WIDTH_A, ada, dia) & mask_a);
                    if (WEA)
                        for (bit_a = 0; bit_a < 18; bit_a = bit_a + 1)
                            if (mask_a[bit_a]) mem[word_of(DATA_WIDTH_A, ada)][bit_a] <= new_a[bit_a];
                    if (!WEA || WRITEMODE_A == "READBEFOREWRITE")
                        latch_a <= extract(DATA_WIDTH_A, ada, old_a);
                    else if (WRITEMODE_A == "WRITETHROUGH")
                        latch_a <= extract(DATA_WIDTH_A, ada, new_a);
                end
            end
        end
    end

    // Port B (x36: reads words 2k, 2k + 1 into DOA, DOB).
    reg [17:0] old_b, new_b, mask_b;
    integer bit_b;
    always @(posedge clk_b or posedge (async_reset & RSTB)) begin
        if (RSTB) begin
            latch_b <= 18'b0;
            latch_b_low <= 18'b0;
            out_b <= 18'b0;
            out_b_low <= 18'b0;
        end else begin
            if (REGMODE_B == "OUTREG" && OCEB) begin
                out_b <= latch_b;
                out_b_low <= latch_b_low;
            end
            if (sel_b) begin
                if (A36 && WEB) begin
                    $display("DP16KD model: %m: port B writes while port A is x36 (its DIB is port A's data)");
                    $stop;
                end
                if (B36) begin
                    if (WEB) begin
                        $display("DP16KD model: %m: an x36 port B only reads");
                        $stop;
                    end
                    latch_b_low <= mem[{adb[13:5], 1'b0}];
                    latch_b <= mem[{adb[13:5], 1'b1}];
                end else begin
                    old_b = mem[word_of(DATA_WIDTH_B, adb)];
                    mask_b = mask_of(DATA_WIDTH_B, adb);
                    new_b = (old_b & ~mask_b) | (place(DATA_WIDTH_B, adb, dib) & mask_b);
                    if (WEB)
                        for (bit_b = 0; bit_b < 18; bit_b = bit_b + 1)
                            if (mask_b[bit_b]) mem[word_of(DATA_WIDTH_B, adb)][bit_b] <= new_b[bit_b];
                    if (!WEB || WRITEMODE_B == "READBEFOREWRITE")
                        latch_b <= extract(DATA_WIDTH_B, adb, old_b);
                    else if (WRITEMODE_B == "WRITETHROUGH")
                        latch_b <= extract(DATA_WIDTH_B, adb, new_b);
                end
            end
        end
    end

    wire [17:0] doa = B36 ? (REGMODE_B == "OUTREG" ? out_b_low : latch_b_low)
                          : (REGMODE_A == "OUTREG" ? out_a : latch_a);
    wire [17:0] dob = REGMODE_B == "OUTREG" ? out_b : latch_b;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
endmodule
